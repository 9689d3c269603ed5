import { ErrorCode, codedError } from '../errors.ts';

const MAX_TAGS = 10;
const MAX_TAG_LENGTH = 64;

/**
 * A request's usage tags, sorted and unique, or a coded refusal naming the field. `reserved` tags
 * the server adds itself (an agent's) count against the maximum, and are added.
 */
export function checkTags(tags: readonly string[] | null | undefined, reserved: readonly string[] = []): string[] {
  if (!tags) return [...reserved];
  const allowed = MAX_TAGS - reserved.length;
  if (tags.length > allowed) throw codedError(ErrorCode.BAD_USER_INPUT, `at most ${allowed} tags`, { field: 'tags' });
  for (const [index, tag] of tags.entries()) {
    if (tag.length === 0 || tag.length > MAX_TAG_LENGTH)
      throw codedError(ErrorCode.BAD_USER_INPUT, `tags[${index}] must be 1 to ${MAX_TAG_LENGTH} characters`, { field: `tags[${index}]` });
  }
  return [...new Set([...reserved, ...tags])].sort();
}
