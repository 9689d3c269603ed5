import { badInput } from '../errors.ts';

export const MAX_TAGS = 10;
export const MAX_TAG_LENGTH = 64;

/**
 * A request's usage tags, sorted and unique, or a coded refusal naming the field. `reserved` tags
 * the server adds itself (an agent's) count against the maximum, and are added.
 */
export function checkTags(tags: readonly string[] | null | undefined, reserved: readonly string[] = []): string[] {
  if (!tags) return [...reserved];
  const allowed = MAX_TAGS - reserved.length;
  if (tags.length > allowed) throw badInput('tags', `at most ${allowed} tags`);
  for (const [index, tag] of tags.entries()) {
    if (tag.length === 0 || tag.length > MAX_TAG_LENGTH)
      throw badInput(`tags[${index}]`, `tags[${index}] must be 1 to ${MAX_TAG_LENGTH} characters`);
  }
  return [...new Set([...reserved, ...tags])].sort();
}
