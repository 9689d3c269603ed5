import { describe, expect, it } from 'vitest';
import { newKeySecret } from '../access/access-store.ts';
import { detect, type DetectorOptions, type EntityType } from './detectors.ts';

/** What `detect` found in `text`: each value with its type and rule. */
const found = (text: string, options?: DetectorOptions) =>
  detect(text, options).map(({ type, rule, start, end }) => ({ type, rule, value: text.slice(start, end) }));
const typesIn = (text: string, options?: DetectorOptions): EntityType[] => detect(text, options).map(({ type }) => type);

describe('payment card numbers', () => {
  it.each([
    ['Visa, spaced', '4111 1111 1111 1111'],
    ['Mastercard, dashed', '5555-5555-5555-4444'],
    ['American Express, 4-6-5', '3782 822463 10005'],
    ['Discover, bare', '6011111111111117'],
    ['JCB', '3530111333300000'],
    ['UnionPay', '6200000000000005'],
  ])('finds a %s number', (_name, card) => {
    expect(found(`pay with ${card} please`)).toEqual([{ type: 'CARD', rule: 'card', value: card }]);
  });

  it.each([
    ['that fails the Luhn check', '4111 1111 1111 1112'],
    ['an order number of 16 digits', '1234-5678-9012-3456'],
    ['too short for any issuer', '4111 1111 1111'],
    ['inside a longer run of digits', '94111111111111111'],
  ])('takes no number %s for a card', (_name, text) => {
    expect(typesIn(`ref ${text}`)).not.toContain('CARD');
  });
});

describe('IBANs', () => {
  it.each([
    ['printed in groups', 'GB82 WEST 1234 5698 7654 32'],
    ['compact', 'DE89370400440532013000'],
    ['with letters in the account', 'FR1420041010050500013M02606'],
  ])('finds one %s', (_name, iban) => {
    expect(found(`IBAN: ${iban}.`)).toEqual([{ type: 'IBAN', rule: 'iban', value: iban }]);
  });

  it('takes none whose mod-97 check fails', () => {
    expect(typesIn('IBAN GB82WEST12345698765433')).toEqual([]);
  });
});

describe('personal data', () => {
  it('finds e-mail addresses, international phone numbers, dashed SSNs, NINOs and IP addresses', () => {
    const text =
      'Write to jane.doe+ops@example.co.uk or call +44 20 7946 0958; SSN 123-45-6789, NI number AB 12 34 56 C, from 192.168.1.20 and 2001:db8::1.';
    expect(found(text)).toEqual([
      { type: 'EMAIL', rule: 'email', value: 'jane.doe+ops@example.co.uk' },
      { type: 'PHONE', rule: 'phone', value: '+44 20 7946 0958' },
      { type: 'US_SSN', rule: 'us-ssn', value: '123-45-6789' },
      { type: 'UK_NINO', rule: 'uk-nino', value: 'AB 12 34 56 C' },
      { type: 'IP_ADDRESS', rule: 'ip-address', value: '192.168.1.20' },
      { type: 'IP_ADDRESS', rule: 'ip-address', value: '2001:db8::1' },
    ]);
  });

  it('reads national phone numbers in the configured region only', () => {
    expect(typesIn('call (415) 555-2671')).toEqual([]);
    expect(found('call (415) 555-2671', { phoneRegion: 'US' })).toEqual([{ type: 'PHONE', rule: 'phone', value: '(415) 555-2671' }]);
  });

  it('takes no SSN that was never issued, and no NINO with a prefix never used', () => {
    expect(typesIn('000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000')).toEqual([]);
    expect(typesIn('QQ 12 34 56 C, GB 12 34 56 A, AO 12 34 56 B')).toEqual([]);
  });
});

describe('secrets', () => {
  const { secret: modelgraphKey } = newKeySecret();
  it.each([
    ['secret.aws-access-key', 'AKIAIOSFODNN7EXAMPLE'],
    ['secret.github-token', `ghp_${'a1B2'.repeat(9)}`],
    ['secret.openai-key', `sk-proj-${'Ab3_'.repeat(12)}`],
    ['secret.anthropic-key', `sk-ant-api03-${'xY9-'.repeat(10)}`],
    ['secret.google-api-key', `AIza${'Sy0_'.repeat(8)}abc`],
    ['secret.slack-token', 'xoxb-1234567890-abcdefghij'],
    ['secret.stripe-key', `sk_live_${'4eC39HqLyjWDarjtT1zdp7dc'}`],
    ['secret.jwt', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U'],
    ['secret.modelgraph-key', modelgraphKey],
    [
      'secret.private-key',
      '-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----',
    ],
  ])('finds %s', (rule, secret) => {
    expect(found(`use this: ${secret} thanks`)).toEqual([{ type: 'SECRET', rule, value: secret }]);
  });
});

describe('custom patterns', () => {
  it('finds a tenant’s own pattern, named by it, with or without the global flag', () => {
    const custom = [
      { name: 'employee-id', pattern: /\bEMP-\d{6}\b/ },
      { name: 'project', pattern: /\bPRJ-[A-Z]{3}\b/g },
    ];
    expect(found('EMP-004211 works on PRJ-ABC and EMP-000001', { custom })).toEqual([
      { type: 'CUSTOM', rule: 'custom.employee-id', value: 'EMP-004211' },
      { type: 'CUSTOM', rule: 'custom.project', value: 'PRJ-ABC' },
      { type: 'CUSTOM', rule: 'custom.employee-id', value: 'EMP-000001' },
    ]);
  });
});

describe('ordinary text', () => {
  // Dates, amounts, ids, versions, times, codes: what business prompts are full of.
  const BENIGN = [
    'The invoice of 2026-12-04 totals $1,234,567.89 (EUR 1.234.567,89), due 04/01/2027.',
    'Order #1234 5678 9012 3456 shipped; tracking 1Z999AA10123456784, parcel 00340434161094042581.',
    'Release 10.2.3 fixed bug 4521; build 2026.12.4.1187 runs at 12:30:45 on node 20.20.2.',
    'ISBN 978-3-16-148410-0, ISSN 2049-3630, postcode 94103-1234, extension 4411, room 1204.',
    'Our revenue grew 12.5% to 3,400,000 in Q3; 1,000,000 users; account 00012345; SKU 400-12-A.',
    'Reference 5105 1051 0510 5106 is an internal batch id, not a payment (it fails Luhn).',
    'Coordinates 48.8566, 2.3522; temperature -3.5°C; ratio 16:9; score 4-2; chapter 3.1.4.',
  ].join('\n');

  it('finds nothing in text full of ordinary numbers (the false-positive corpus)', () => {
    expect(found(BENIGN)).toEqual([]);
  });
});
