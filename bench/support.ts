/**
 * What several benchmarks share: readings of a process tree's CPU and memory from /proc, the check
 * that a process listens on loopback only, and graphql-ws clients of a modelgraph under test.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const tickMs = 1000 / CLOCK_TICKS;

/** ppid and utime + stime (ticks) of a process, every thread included; undefined once it is gone. */
function readStat(pid: number): { ppid: number; ticks: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) };
  } catch {
    return undefined;
  }
}

/** The roots and every live descendant (an npm or shell wrapper's node, a worker process). */
export function processTree(roots: number[]): number[] {
  const childrenOf = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat) childrenOf.set(stat.ppid, [...(childrenOf.get(stat.ppid) ?? []), pid]);
  }
  const tree: number[] = [];
  const queue = roots.filter((pid) => existsSync(`/proc/${pid}`));
  while (queue.length > 0) {
    const pid = queue.shift()!;
    tree.push(pid);
    queue.push(...(childrenOf.get(pid) ?? []));
  }
  return tree;
}

/** CPU time (user + system) these processes have used so far, in ms. */
export function cpuMs(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (readStat(pid)?.ticks ?? 0), 0) * tickMs;
}

/** A /proc/<pid>/status field in KiB (VmRSS now, VmHWM the peak), summed. */
export function memoryKiB(pids: number[], field: 'VmRSS' | 'VmHWM'): number {
  return pids.reduce((sum, pid) => {
    try {
      const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return sum + Number(match?.[1] ?? 0);
    } catch {
      return sum;
    }
  }, 0);
}

/** Busy time of the whole machine (every core), from /proc/stat: what else was running shows here. */
export function machineBusyMs(): number {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return (user! + nice! + system! + irq! + softirq! + steal!) * tickMs;
}

/** What `ss` says a process listens on: the check that nothing is bound beyond loopback. */
export function listeningSockets(pid: number): string {
  const lines = execFileSync('ss', ['-ltnpH']).toString().split('\n');
  const own = lines.filter((line) => line.includes(`pid=${pid},`)).map((line) => line.trim().split(/\s+/)[3]!);
  const outside = own.filter((address) => !address.startsWith('127.') && !address.startsWith('[::1]'));
  if (outside.length > 0) throw new Error(`pid ${pid} listens beyond loopback: ${outside.join(', ')}`);
  return own.join(', ');
}

/** `sockets` graphql-ws clients of the router at `url` (its GraphQL URL), each connected at once with the API key. */
export function wsClients(url: string, key: string, sockets: number): Client[] {
  return Array.from({ length: sockets }, () =>
    createClient({
      url: url.replace('http', 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      connectionParams: { authorization: `Bearer ${key}` },
    }),
  );
}
