// Challenge-response authentication of the source daemon. The destination's API hands out a
// one-time token (id + secret); the operator (or orchestrator) gives it to the source. On the
// wire only the token id, two fresh nonces and HMAC proofs travel: a recorded session is useless
// for a later one (the destination nonce is new and single-use, the token is burnt on success),
// and the destination proves itself back so the source does not stream guest RAM to an impostor.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { MigrationProtocolError } from './errors.js';
import { NONCE_BYTES, PROOF_BYTES, TOKEN_ID_BYTES } from './messages.js';

export const TOKEN_SECRET_BYTES = 32;
const DEFAULT_TTL_MS = 10 * 60_000;
const SOURCE_LABEL = Buffer.from('ferry-migration source-proof\0', 'ascii');
const DESTINATION_LABEL = Buffer.from('ferry-migration destination-proof\0', 'ascii');

export interface MigrationToken {
  readonly id: Buffer;
  readonly secret: Buffer;
}

/** What both proofs are bound to: every field is fixed-length, so the concatenation is unambiguous. */
export interface AuthTranscript {
  readonly version: number;
  readonly tokenId: Buffer;
  readonly sourceNonce: Buffer;
  readonly destinationNonce: Buffer;
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/** `<id hex>.<secret hex>`: one string to paste into `ferry migrate --token`. */
export function formatToken(t: MigrationToken): string {
  return `${t.id.toString('hex')}.${t.secret.toString('hex')}`;
}

export function parseToken(text: string): MigrationToken {
  const m = /^([0-9a-f]{32})\.([0-9a-f]{64})$/.exec(text.trim());
  if (!m) throw new MigrationProtocolError('AUTH_FAILED', 'a migration token is <32 hex digits>.<64 hex digits>');
  return { id: Buffer.from(m[1]!, 'hex'), secret: Buffer.from(m[2]!, 'hex') };
}

function prove(label: Buffer, secret: Buffer, t: AuthTranscript): Buffer {
  if (t.tokenId.length !== TOKEN_ID_BYTES || t.sourceNonce.length !== NONCE_BYTES || t.destinationNonce.length !== NONCE_BYTES) {
    throw new MigrationProtocolError('AUTH_FAILED', 'authentication transcript has a field of the wrong length');
  }
  const version = Buffer.alloc(2);
  version.writeUInt16LE(t.version);
  return createHmac('sha256', secret).update(label).update(version).update(t.tokenId).update(t.sourceNonce).update(t.destinationNonce).digest();
}

export function sourceProof(secret: Buffer, t: AuthTranscript): Buffer {
  return prove(SOURCE_LABEL, secret, t);
}

export function destinationProof(secret: Buffer, t: AuthTranscript): Buffer {
  return prove(DESTINATION_LABEL, secret, t);
}

/** Constant-time in the proof's content; a wrong length is refused without comparing. */
export function proofMatches(expected: Buffer, received: Buffer): boolean {
  if (expected.length !== PROOF_BYTES || received.length !== PROOF_BYTES) return false;
  return timingSafeEqual(expected, received);
}

/** The source's check of the destination's AuthOk. */
export function verifyDestination(secret: Buffer, t: AuthTranscript, proof: Buffer): void {
  if (!proofMatches(destinationProof(secret, t), proof)) {
    throw new MigrationProtocolError('AUTH_FAILED', 'the destination did not prove it holds the migration token');
  }
}

/** One pending challenge, created on Hello and answered once by Auth. */
export interface Challenge {
  readonly transcript: AuthTranscript;
}

interface Issued {
  readonly secret: Buffer;
  readonly expiresAt: number;
}

/**
 * The destination daemon's side: issues tokens, answers Hello with a challenge, checks the proof.
 * Unknown, expired and wrong tokens all fail the same way and only at the proof, so a prober
 * learns nothing about which token ids exist.
 */
export class TokenIssuer {
  private readonly tokens = new Map<string, Issued>();
  private readonly challenges = new WeakMap<Challenge, { used: boolean }>();
  /** Destination nonces ever answered; random 256-bit values never repeat by chance, so a repeat
   * is a replay. Grows by one entry per migration attempt — cleared with the daemon. */
  private readonly usedNonces = new Set<string>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: { ttlMs?: number; now?: () => number } = {}) {
    this.ttlMs = opts.ttlMs ?? DEFAULT_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  issue(): MigrationToken {
    const token = { id: randomBytes(TOKEN_ID_BYTES), secret: randomBytes(TOKEN_SECRET_BYTES) };
    this.tokens.set(token.id.toString('hex'), { secret: token.secret, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  revoke(id: Buffer): void {
    this.tokens.delete(id.toString('hex'));
  }

  /** Answers a Hello. `destinationNonce` is for tests only; a daemon lets it be fresh. */
  challenge(version: number, tokenId: Buffer, sourceNonce: Buffer, destinationNonce: Buffer = newNonce()): Challenge {
    const c: Challenge = { transcript: { version, tokenId: Buffer.from(tokenId), sourceNonce: Buffer.from(sourceNonce), destinationNonce: Buffer.from(destinationNonce) } };
    this.challenges.set(c, { used: false });
    return c;
  }

  /** Checks the source's proof; on success burns the token and returns the AuthOk proof. */
  verify(c: Challenge, proof: Buffer): Buffer {
    const state = this.challenges.get(c);
    const nonceKey = c.transcript.destinationNonce.toString('hex');
    if (!state || state.used || this.usedNonces.has(nonceKey)) {
      throw new MigrationProtocolError('AUTH_REPLAY', 'this challenge was already answered');
    }
    state.used = true;
    this.usedNonces.add(nonceKey);
    const t = c.transcript;
    if (t.sourceNonce.equals(t.destinationNonce)) throw new MigrationProtocolError('AUTH_FAILED', 'the source echoed the destination nonce');
    const key = t.tokenId.toString('hex');
    const issued = this.tokens.get(key);
    const live = issued !== undefined && issued.expiresAt > this.now();
    // Compute a proof even for an unknown token so both paths cost the same.
    const expected = sourceProof(live ? issued.secret : DUMMY_SECRET, t);
    if (!proofMatches(expected, proof) || !live) {
      throw new MigrationProtocolError('AUTH_FAILED', 'the source did not prove it holds a valid migration token');
    }
    this.tokens.delete(key);
    return destinationProof(issued.secret, t);
  }
}

const DUMMY_SECRET = randomBytes(TOKEN_SECRET_BYTES);
