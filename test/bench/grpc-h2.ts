// The gRPC wire protocol (HTTP/2 POST, 5-byte length-prefixed messages,
// status in trailers) spoken over node:http2 directly, for the simulated
// agents of sim-fleet.ts. A real agent runs grpc-js on a machine of its own;
// here one process plays thousands of agents on the 2 cores the controller
// being measured runs on, and grpc-js' per-call and per-message machinery
// (interceptors, resolving and load-balancing calls, filters) was most of
// what the simulation cost, taken from the controller. The controller sees
// the same HTTP/2 streams, frames and flow control either way.
import http2 from "node:http2";

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_CONTENT_TYPE, HTTP2_HEADER_TE } = http2.constants;

/**
 * A dial that failed is not tried again for this long; streams opened meanwhile fail at once (grpc-js' channel
 * backoff, which the fleet set to 100-300 ms): without it every agent's retry on a shared channel was a connect of
 * its own while the controller was down, thousands a second, taken from the controller starting up.
 */
const REDIAL_MS = 100;

/** One HTTP/2 connection to a server, dialled again on first use after it closed (as a grpc-js channel would be). */
export class H2Channel {
  private session?: http2.ClientHttp2Session;
  private failedAt = -Infinity;

  /** `windowBytes`: the stream and connection receive window (grpc-js' grpc-node.flow_control_window); HTTP/2's 64 KiB when unset. */
  constructor(
    private readonly address: string,
    private readonly windowBytes?: number,
  ) {}

  private live(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    if (performance.now() - this.failedAt < REDIAL_MS) throw new Error("connection failed just now");
    // No session memory cap, as grpc-js sets it: with Node's default (10 MB) a connection shared by many agents
    // would refuse new streams while that much of their data is unread.
    const s = http2.connect(`http://${this.address}`, { maxSessionMemory: Number.MAX_SAFE_INTEGER, ...(this.windowBytes ? { settings: { initialWindowSize: this.windowBytes } } : {}) });
    // A refused or reset connection fails its streams, which end and retry on their own schedule.
    let connected = false;
    s.once("connect", () => {
      connected = true;
      if (this.windowBytes) s.setLocalWindowSize(this.windowBytes);
    });
    s.on("error", () => {
      if (!connected) this.failedAt = performance.now();
    });
    s.once("close", () => {
      if (this.session === s) this.session = undefined;
    });
    this.session = s;
    return s;
  }

  /** Opens a bidirectional stream of `method`; `onMessage` gets each message's bytes, `onEnd` is called once when the stream is over. */
  open(method: string, onMessage: (msg: Buffer) => void, onEnd: () => void): H2Call {
    return new H2Call(this, method, onMessage, onEnd);
  }

  /** @internal */
  request(method: string): http2.ClientHttp2Stream {
    return this.live().request({ [HTTP2_HEADER_METHOD]: "POST", [HTTP2_HEADER_PATH]: method, [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc", [HTTP2_HEADER_TE]: "trailers" });
  }
}

export class H2Call {
  private readonly stream?: http2.ClientHttp2Stream;
  private ended = false;
  /** Bytes of a message not yet complete, and how long it is once its header has arrived. */
  private chunks: Buffer[] = [];
  private have = 0;

  constructor(
    channel: H2Channel,
    method: string,
    private readonly onMessage: (msg: Buffer) => void,
    private readonly onEnd: () => void,
  ) {
    try {
      this.stream = channel.request(method);
    } catch {
      // The session was closing under us: the stream is over before it began.
      queueMicrotask(() => this.end());
      return;
    }
    this.stream.on("data", (chunk: Buffer) => this.receive(chunk));
    this.stream.on("error", () => undefined);
    this.stream.once("close", () => this.end());
  }

  /** Writes one message (false when the stream is already over). */
  write(msg: Uint8Array): boolean {
    if (this.ended || !this.stream || this.stream.destroyed) return false;
    const frame = Buffer.allocUnsafe(5 + msg.length);
    frame[0] = 0; // not compressed
    frame.writeUInt32BE(msg.length, 1);
    frame.set(msg, 5);
    this.stream.write(frame);
    return true;
  }

  /** Ends the stream as a cancelled call does (RST_STREAM CANCEL). */
  cancel(): void {
    if (this.stream && !this.stream.destroyed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd();
  }

  private receive(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.have += chunk.length;
    while (this.have >= 5) {
      const head = this.chunks[0].length >= 5 ? this.chunks[0] : this.join();
      const len = head.readUInt32BE(1);
      if (this.have < 5 + len) return;
      // Most messages arrive whole in one chunk; large ones (snapshots) are joined once, when complete.
      const all = this.chunks.length === 1 ? this.chunks[0] : this.join();
      this.onMessage(all.subarray(5, 5 + len));
      const rest = all.subarray(5 + len);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.have = rest.length;
    }
  }

  private join(): Buffer {
    const all = Buffer.concat(this.chunks, this.have);
    this.chunks = [all];
    return all;
  }
}
