// Which controller to try next and how long to wait first. Pure: time and
// randomness come from outside, so the schedule can be tested exactly.
import { Backoff } from "../retry/index.js";

export const RECONNECT_BASE_MS = 250;
export const RECONNECT_CAP_MS = 10_000;

export interface Attempt {
  address: string;
  /** Wait this long before dialling. */
  delayMs: number;
}

/**
 * Rotates through the controller addresses. Every attempt goes to the next
 * address, so a dead replica costs one attempt, not a whole backoff ladder.
 * Delays grow exponentially (with jitter, capped) while attempts keep
 * failing, and start over once a stream delivered a snapshot — but even then
 * the first retry waits a little, so a controller that accepts and then drops
 * every stream cannot drive the agent into a busy loop (flannel#2171).
 */
export class ReconnectPolicy {
  private index = -1;
  private readonly backoff: Backoff;
  private first = true;

  constructor(
    readonly addresses: readonly string[],
    random: () => number = Math.random,
    baseMs = RECONNECT_BASE_MS,
    capMs = RECONNECT_CAP_MS,
  ) {
    if (addresses.length === 0) throw new Error("controller: at least one address is needed");
    this.backoff = new Backoff(baseMs, capMs, random);
  }

  /** The next address to dial and the delay before dialling it. */
  next(): Attempt {
    this.index = (this.index + 1) % this.addresses.length;
    const delayMs = this.first ? 0 : this.backoff.next();
    this.first = false;
    return { address: this.addresses[this.index], delayMs };
  }

  /** A stream got its snapshot: the controller is healthy, so the next failure starts from the base delay. */
  succeeded(): void {
    this.backoff.reset();
  }
}

/** Splits "--controller a:1,b:2" and checks each is host:port. */
export function parseControllerAddresses(value: string | string[]): string[] {
  const items = (Array.isArray(value) ? value : [value]).flatMap((v) => v.split(",")).map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new Error("controller: at least one HOST:PORT is needed");
  for (const a of items) {
    const m = /^(?:\[[^\]]+\]|[^:\s\[\]]+):(\d{1,5})$/.exec(a);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) throw new Error(`controller: "${a}" is not HOST:PORT`);
  }
  return items;
}
