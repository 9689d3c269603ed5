/** A TCP proxy a test can cut, as a crash or a network fault would. */
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface TcpProxy {
  port: number;
  /** Destroys every open connection (new ones are still accepted). */
  cut(): Promise<void>;
  /** Stops accepting and destroys every open connection. */
  close(): Promise<void>;
  connections(): number;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(targetPort, targetHost);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const cut = async () => {
    const open = [...sockets];
    for (const socket of open) socket.destroy();
    await Promise.all(open.map((socket) => (socket.closed ? undefined : once(socket, 'close'))));
  };
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    cut,
    async close() {
      server.close();
      await cut();
      await closed;
    },
    connections: () => sockets.size,
  };
}
