/**
 * A USER message's parts (text and images) as the provider contract takes them. Images arrive by
 * URL or as their bytes; a `data:` URL is read into its bytes here, so that adapters see either a
 * URL the provider fetches or bytes, never a URL that is secretly bytes.
 */
import { isIP } from 'node:net';
import type { ChatContentPartInput } from '../../codegen/inference.resolvers.ts';
import type { ContentPart, ImageMediaType, ImageSource } from '../../providers/contract.ts';
import { badInput } from '../../platform/errors.ts';

const MEDIA_TYPES = new Set<string>(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const DATA_URL = /^data:([^;,]+);base64,(.*)$/s;
/** Anthropic's per-request maximum; OpenAI's is higher. */
export const MAX_IMAGES = 100;

function mediaType(field: string, value: string | null | undefined): ImageMediaType {
  const type = value?.toLowerCase();
  if (!type || !MEDIA_TYPES.has(type)) throw badInput(field, `${field}: image/png, image/jpeg, image/gif or image/webp`);
  return type as ImageMediaType;
}

function base64(field: string, data: string): string {
  if (data.length === 0 || data.length % 4 !== 0 || !BASE64.test(data)) throw badInput(field, `${field} is not base64`);
  return data;
}

function imageSource(field: string, image: NonNullable<ChatContentPartInput['image']>): ImageSource {
  const { url, data } = image;
  if ((url == null) === (data == null)) throw badInput(field, `${field}: set url or data, not both`);
  if (data != null) return { mediaType: mediaType(`${field}.mediaType`, image.mediaType), data: base64(`${field}.data`, data) };
  const inline = DATA_URL.exec(url!);
  if (inline) return { mediaType: mediaType(`${field}.url`, inline[1]), data: base64(`${field}.url`, inline[2]!) };
  let parsed: URL;
  try {
    parsed = new URL(url!);
  } catch {
    throw badInput(`${field}.url`, `${field}.url is not a URL`);
  }
  if (parsed.protocol !== 'https:') throw badInput(`${field}.url`, `${field}.url: an https: URL or a base64 data: URL`);
  // The provider fetches it: never an address of a network the provider may sit in.
  if (isAddressOrLocal(parsed.hostname)) throw badInput(`${field}.url`, `${field}.url: a host name, not an IP address or localhost`);
  return { url: parsed.href };
}

function isAddressOrLocal(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return isIP(host) !== 0 || host === 'localhost' || host.endsWith('.localhost');
}

/** The parts after a message's `content`, checked; `field` is the message's path (`messages[2]`). */
export function toContentParts(field: string, content: string, parts: readonly ChatContentPartInput[]): ContentPart[] {
  const out: ContentPart[] = content ? [{ type: 'text', text: content }] : [];
  parts.forEach((part, index) => {
    const at = `${field}.parts[${index}]`;
    if (part.type === 'TEXT') {
      if (part.text == null || part.image != null) throw badInput(at, `${at}: a TEXT part has text and no image`);
      out.push({ type: 'text', text: part.text });
      return;
    }
    if (part.image == null || part.text != null) throw badInput(at, `${at}: an IMAGE part has an image and no text`);
    const detail = part.image.detail?.toLowerCase() as 'auto' | 'low' | 'high' | undefined;
    out.push({ type: 'image', image: imageSource(`${at}.image`, part.image), ...(detail && { detail }) });
  });
  return out;
}

export const textOf = (parts: readonly ContentPart[]): string =>
  parts.flatMap((part) => (part.type === 'text' ? [part.text] : [])).join('\n');
