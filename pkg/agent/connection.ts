// The agent's side of the Join stream: dial a controller, send `join`, hand
// every ConfigUpdate to the agent, and when the stream ends for any reason,
// dial the next controller after a backoff. The dataplane is not touched
// here: losing the controller changes nothing in the kernel (fail static).
import * as grpc from "@grpc/grpc-js";
import { ControllerClient, type AgentMessage, type ConfigUpdate, type JoinRequest } from "../api/index.js";
import type { Logger } from "../log/index.js";
import { sleep } from "../retry/index.js";
import { ReconnectPolicy } from "./reconnect.js";

/**
 * Client keepalive (FIELD-NOTES): pings every 10 s — not more often than the
 * controller's min_ping_interval (5 s), or it drops the pings — so a
 * controller that vanished without a FIN is noticed within ~15 s.
 */
export const CLIENT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
};

export interface StreamInfo {
  /** Increments for every stream; updates and acks are matched by it. */
  epoch: number;
  address: string;
}

export interface ConnectionOptions {
  addresses: string[];
  credentials: () => grpc.ChannelCredentials;
  /** Built fresh for every stream (it carries the current MACs and subnets). */
  joinRequest: () => JoinRequest;
  log: Logger;
  onUpdate(update: ConfigUpdate, stream: StreamInfo): void;
  onConnected?(stream: StreamInfo): void;
  /** A new stream's Join was just written (before its snapshot): what must follow the Join goes now. */
  onJoinSent?(stream: StreamInfo): void;
  onDisconnected?(stream: StreamInfo, reason: string, hadSnapshot: boolean): void;
  /** A stream that has not delivered a snapshot within this is abandoned for the next address. */
  snapshotTimeoutMs?: number;
  random?: () => number;
  reconnectBaseMs?: number;
  reconnectCapMs?: number;
}

type Call = grpc.ClientDuplexStream<AgentMessage, ConfigUpdate>;

const REFUSALS = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED, grpc.status.FAILED_PRECONDITION]);

export class ControllerConnection {
  private readonly policy: ReconnectPolicy;
  private readonly abort = new AbortController();
  private loop?: Promise<void>;
  private call?: Call;
  private current?: StreamInfo;
  private snapshotSeen = false;
  private epochCounter = 0;
  private endCurrent?: (reason: string) => void;

  constructor(private readonly opts: ConnectionOptions) {
    this.policy = new ReconnectPolicy(opts.addresses, opts.random, opts.reconnectBaseMs, opts.reconnectCapMs);
  }

  /** The stream that has delivered its snapshot, if any. */
  get stream(): StreamInfo | undefined {
    return this.snapshotSeen ? this.current : undefined;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.endCurrent?.("agent stopping");
    await this.loop;
  }

  /** Acknowledges `revision` on stream `epoch`; dropped when that stream is gone. */
  ack(epoch: number, revision: number, error = ""): void {
    if (this.current?.epoch !== epoch) return;
    this.write({ msg: { $case: "ack", value: { revision, error } } });
  }

  /** Sends a message on stream `epoch`; dropped when that stream is gone. */
  send(epoch: number, msg: AgentMessage): void {
    if (this.current?.epoch !== epoch || !this.call) return;
    this.write(msg);
  }

  /** Sends `join` again on the open stream (registration changed, e.g. a new VTEP MAC). */
  rejoin(): void {
    if (!this.call) return;
    this.write({ msg: { $case: "join", value: this.opts.joinRequest() } });
  }

  private write(msg: AgentMessage): void {
    try {
      this.call?.write(msg);
    } catch (err) {
      this.opts.log.debug({ err: String(err) }, "write on a closing stream dropped");
    }
  }

  private async run(): Promise<void> {
    const { signal } = this.abort;
    while (!signal.aborted) {
      const { address, delayMs } = this.policy.next();
      if (delayMs > 0) {
        this.opts.log.debug({ address, delayMs: Math.round(delayMs) }, "waiting before dialling controller");
        await sleep(delayMs, signal);
        if (signal.aborted) break;
      }
      await this.session(address);
    }
  }

  /** One stream, from dial to its end. */
  private session(address: string): Promise<void> {
    const { log } = this.opts;
    const info: StreamInfo = { epoch: ++this.epochCounter, address };
    const client = new ControllerClient(address, this.opts.credentials(), CLIENT_CHANNEL_OPTIONS);
    const call = client.join();
    this.call = call;
    this.current = info;
    this.snapshotSeen = false;
    log.debug({ address, epoch: info.epoch }, "dialling controller");

    return new Promise<void>((resolve) => {
      let done = false;
      /** The controller answered and said no (bad request, wrong certificate): no retry will fix that by itself. */
      let rejected = false;
      const timeoutMs = this.opts.snapshotTimeoutMs ?? 30_000;
      const snapshotTimer = setTimeout(() => finish(`no snapshot within ${timeoutMs} ms`), timeoutMs);
      const finish = (reason: string) => {
        if (done) return;
        done = true;
        clearTimeout(snapshotTimer);
        const hadSnapshot = this.snapshotSeen;
        this.call = undefined;
        this.snapshotSeen = false;
        this.endCurrent = undefined;
        call.removeAllListeners("data");
        call.cancel();
        client.close();
        if (hadSnapshot) log.warn({ address, reason }, "disconnected from controller");
        else if (rejected) log.error({ address, reason }, "controller refused to let this node join; retrying, but this needs fixing");
        else log.warn({ address, reason }, "could not join controller");
        this.opts.onDisconnected?.(info, reason, hadSnapshot);
        resolve();
      };
      this.endCurrent = finish;

      call.on("data", (u: ConfigUpdate) => {
        if (done) return;
        if (u.snapshot && !this.snapshotSeen) {
          this.snapshotSeen = true;
          clearTimeout(snapshotTimer);
          this.policy.succeeded();
          log.info({ address, revision: u.revision }, "connected to controller");
          this.opts.onConnected?.(info);
        } else if (!this.snapshotSeen) {
          // The protocol starts with a snapshot; anything else means a confused controller.
          finish("first update was not a snapshot");
          return;
        }
        this.opts.onUpdate(u, info);
      });
      call.on("error", (err: grpc.ServiceError) => {
        rejected = REFUSALS.has(err.code);
        finish(`${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`);
      });
      call.on("status", (s: grpc.StatusObject) => {
        rejected ||= REFUSALS.has(s.code);
        finish(`stream ended: ${grpc.status[s.code] ?? s.code}${s.details ? `: ${s.details}` : ""}`);
      });
      call.on("end", () => finish("controller ended the stream"));
      this.write({ msg: { $case: "join", value: this.opts.joinRequest() } });
      this.opts.onJoinSent?.(info);
    });
  }
}
