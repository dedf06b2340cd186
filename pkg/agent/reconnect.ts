// Which controller to try next and how long to wait first. Pure: time and
// randomness come from outside, so the schedule can be tested exactly.
import { Backoff } from "../retry/index.js";

export const RECONNECT_BASE_MS = 250;
export const RECONNECT_CAP_MS = 10_000;
/**
 * Retries at the base delay after losing a stream that had delivered its
 * snapshot, before the delays grow: a restarted controller (or a replica
 * replacing it) serves again within a second or two, and an exponential
 * ladder from the first failure would leave most agents waiting 2-4 s for
 * their next attempt after it does (measured: N=1000 resynced 3.7 s after a
 * SIGKILL instead of ~2.3 s). A refused dial costs the controller's host one
 * RST; it binds its port only once it can serve.
 */
export const PROMPT_RETRIES = 8;

export interface Attempt {
  address: string;
  /** Wait this long before dialling. */
  delayMs: number;
}

/**
 * Rotates through the controller addresses. Every attempt goes to the next
 * address, so a dead replica costs one attempt, not a whole backoff ladder.
 * Delays grow exponentially (with jitter, capped) while attempts keep
 * failing, and start over once a stream delivered a snapshot: then the
 * first PROMPT_RETRIES retries wait about the base delay each, and only then
 * grow. Even then every retry waits, so a controller that accepts and then
 * drops every stream cannot drive the agent into a busy loop (flannel#2171).
 */
export class ReconnectPolicy {
  private index = -1;
  private readonly backoff: Backoff;
  private first = true;
  /** Retries left at the base delay (after a stream that delivered a snapshot). */
  private prompt = 0;

  constructor(
    readonly addresses: readonly string[],
    private readonly random: () => number = Math.random,
    private readonly baseMs = RECONNECT_BASE_MS,
    capMs = RECONNECT_CAP_MS,
  ) {
    if (addresses.length === 0) throw new Error("controller: at least one address is needed");
    this.backoff = new Backoff(baseMs, capMs, random);
  }

  /** The next address to dial and the delay before dialling it. */
  next(): Attempt {
    this.index = (this.index + 1) % this.addresses.length;
    let delayMs = 0;
    if (this.first) this.first = false;
    else if (this.prompt > 0) {
      this.prompt--;
      delayMs = this.baseMs / 2 + (this.random() * this.baseMs) / 2;
    } else delayMs = this.backoff.next();
    return { address: this.addresses[this.index], delayMs };
  }

  /** A stream got its snapshot: the controller is healthy, so the next failures retry promptly, then from the base delay. */
  succeeded(): void {
    this.backoff.reset();
    this.prompt = PROMPT_RETRIES;
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
