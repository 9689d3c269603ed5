/**
 * How deep a parsed JSON value nests, checked without recursion. JSON.parse takes any depth, but
 * JSON.stringify and every recursive walk after it overflow the stack on some 10,000 levels —
 * which fits in a small body. Input is refused past a depth no real schema or message reaches.
 */
export const MAX_JSON_DEPTH = 64;

/** True when `value` nests objects and arrays more than `max` levels deep. */
export function nestsDeeperThan(value: unknown, max: number = MAX_JSON_DEPTH): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}
