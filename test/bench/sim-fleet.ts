// A fleet of simulated agents in its own process (the controller benchmark
// forks two or more of these, never running agents in the controller's
// process). Each agent is a real gRPC Join stream speaking proto/weft/v1
// (gRPC over node:http2, grpc-h2.ts, for what grpc-js costs per stream): it
// sends Join (with its VTEP MAC, as the agent does from its state dir),
// decodes every ConfigUpdate off the wire, applies snapshot and deltas to
// its peer set and acknowledges every revision. To keep 2500 agents x 5000
// peers affordable, the decoder reads only what the benchmark checks (peer
// names, the node's own subnet) and a peer set is a bitmap over node indexes.
//
// Commands arrive over the IPC channel from the parent; see Command below.
import { ReconnectPolicy } from "../../pkg/agent/index.js";
import { AgentMessage, JoinRequest } from "../../pkg/api/index.js";
import { simJoinRequest } from "../harness/sim-agent.js";
import { H2Channel, type H2Call } from "./grpc-h2.js";

export type Command =
  /** `agentWindow`: each channel gets the HTTP/2 receive window a real agent has (64 KiB), not the fleet's shared 8 MiB. */
  | { cmd: "init"; address: string; network: string; capacity: number; agentWindow?: boolean }
  | { cmd: "join"; id: number; from: number; to: number; concurrency: number }
  /** Reply once every agent holds at least `peers` peers (from a snapshot received after `snapshotAfter`, epoch ms, when given). */
  | { cmd: "waitPeers"; id: number; peers: number; snapshotAfter?: number }
  /** Reply once every agent has the peer `node`: the epoch-ms arrival time per agent. */
  | { cmd: "expect"; id: number; node: number }
  | { cmd: "leave"; id: number; from: number; to: number }
  | { cmd: "stats"; id: number };

// Each failed reconnect attempt (while the controller is down) creates an
// Error per stream, and under tsx every stack is mapped through source maps:
// with a thousand agents retrying, that was most of this process's CPU,
// which on a 2-core machine it takes from the controller being measured.
// Nothing here reads a stack.
Error.stackTraceLimit = 0;

export const nodeName = (i: number) => `node-${i}`;

const EPOCH = () => performance.timeOrigin + performance.now();

class Agent {
  peers: Uint8Array;
  count = 0;
  snapshots = 0;
  lastSnapshotAt = 0;
  subnet = "";
  call?: H2Call;
  closed = false;
  /** The agent's own reconnect schedule (exponential from 250 ms with jitter, reset by a snapshot). */
  readonly reconnect = new ReconnectPolicy(["controller"]);
  onPeer?: (node: number) => void;

  constructor(
    readonly index: number,
    readonly request: JoinRequest,
    capacity: number,
  ) {
    this.peers = new Uint8Array(capacity);
    this.reconnect.next(); // the first dial, which the agent makes at once
  }

  private set(i: number, present: boolean): void {
    if (i < 0 || i >= this.peers.length || i === this.index) return;
    if (present && !this.peers[i]) {
      this.peers[i] = 1;
      this.count++;
      this.onPeer?.(i);
    } else if (!present && this.peers[i]) {
      this.peers[i] = 0;
      this.count--;
    }
  }

  /** Applies one ConfigUpdate as the agent's applyConfigUpdate would (networks, then peer updates). Returns its revision. */
  apply(buf: Buffer): number {
    // A restart at N=5000 delivers 25 M peer elements, a cold start 12 M per fleet process: the wire is read by hand
    // (the readers below), a peer by its name alone, which comes first (its field 1), the rest jumped over.
    // Measured against @bufbuild/protobuf's BinaryReader with the same shortcuts: 0.14 vs 0.18 ms per 5000-peer
    // snapshot, 0.1-0.2 vs 0.4-0.6 us per one-peer delta.
    at = 0;
    let revision = 0;
    let snapshot = false;
    const netPeers: number[] = [];
    let netSeen = false;
    let removedNet = false;
    /** +(i+1): peer i present, -(i+1): removed. */
    const updates: number[] = [];
    while (at < buf.length) {
      const tag = varint(buf);
      const field = tag >>> 3;
      if (field === 1) revision = varint(buf);
      else if (field === 2) snapshot = varint(buf) !== 0;
      else if (field === 3) {
        const end = varint(buf) + at;
        let ours = false;
        let subnet = "";
        const peers: number[] = [];
        while (at < end) {
          const t = varint(buf);
          const f = t >>> 3;
          if (f === 1) ours = isNetwork(buf);
          else if (f === 10) subnet = text(buf);
          else if (f === 12) peers.push(peerIndex(buf));
          else skip(buf, t & 7);
        }
        if (ours) {
          netSeen = true;
          this.subnet = subnet;
          for (const p of peers) netPeers.push(p);
        }
      } else if (field === 4) {
        if (isNetwork(buf)) removedNet = true;
      } else if (field === 5) {
        const end = varint(buf) + at;
        let ours = false;
        let node = -1;
        let removed = false;
        while (at < end) {
          const t = varint(buf);
          const f = t >>> 3;
          if (f === 1) ours = isNetwork(buf);
          else if (f === 2) node = peerIndex(buf);
          else if (f === 3) removed = varint(buf) !== 0;
          else skip(buf, t & 7);
        }
        if (ours && node >= 0) updates.push(removed ? -(node + 1) : node + 1);
      } else skip(buf, tag & 7);
    }
    if (snapshot || netSeen || removedNet) {
      this.peers.fill(0);
      this.count = 0;
      if (snapshot) {
        this.snapshots++;
        this.lastSnapshotAt = EPOCH();
      }
    }
    for (const p of netPeers) this.set(p, true);
    for (const u of updates) this.set(Math.abs(u) - 1, u > 0);
    return revision;
  }
}

// A cursor over the message being applied, and the few protobuf readers apply() needs.
let at = 0;
let networkBytes = Buffer.alloc(0);

function varint(buf: Uint8Array): number {
  let b = buf[at++];
  if (b < 0x80) return b;
  let v = b & 0x7f;
  let mul = 0x80;
  do {
    b = buf[at++];
    v += (b & 0x7f) * mul;
    mul *= 0x80;
  } while (b >= 0x80);
  return v;
}

function skip(buf: Uint8Array, wireType: number): void {
  if (wireType === 0) varint(buf);
  else if (wireType === 1) at += 8;
  else if (wireType === 2) {
    const len = varint(buf);
    at += len;
  } else if (wireType === 5) at += 4;
  else throw new Error(`wire type ${wireType} not expected in a ConfigUpdate`);
}

function text(buf: Buffer): string {
  const len = varint(buf);
  at += len;
  return buf.toString("utf8", at - len, at);
}

/** Reads a string field and says whether it is the benchmark's network, comparing bytes (a string per peer update was a good part of the decoding). */
function isNetwork(buf: Uint8Array): boolean {
  const len = varint(buf);
  const start = at;
  at += len;
  if (len !== networkBytes.length) return false;
  for (let i = 0; i < len; i++) if (buf[start + i] !== networkBytes[i]) return false;
  return true;
}

/** Reads a Peer as the index in its node_name ("node-<i>"), straight from the bytes; -1 when it has none. */
function peerIndex(buf: Uint8Array): number {
  const end = varint(buf) + at;
  let index = -1;
  while (at < end) {
    const t = varint(buf);
    if (t >>> 3 !== 1) {
      skip(buf, t & 7);
      continue;
    }
    const len = varint(buf);
    index = 0;
    for (let i = at + 5; i < at + len; i++) index = index * 10 + buf[i] - 48;
    break; // node_name comes first on the wire: jump past the rest
  }
  at = end;
  return index;
}

let address = "";
let network = "";
let capacity = 0;
const agents = new Map<number, Agent>();
let channels: H2Channel[] = [];
/**
 * Channels (HTTP/2 connections) per fleet process, and each one's receive
 * window. A real agent has a connection of its own with HTTP/2's 64 KiB
 * window; here one connection carries N/64 agents' streams, and with the
 * default window all their snapshots would queue behind one 64 KiB
 * connection window (a bottleneck of the simulation, not of the controller:
 * the N=5000 restart pushes 1.6 GB of snapshots). 8 MiB per connection is
 * about as much window as its N/64 agents would have had at N=5000. A stream
 * gets the same window (as grpc-js' flow_control_window option does), more than an agent's 64 KiB (a real agent
 * needs a few window round trips for a 325 KB snapshot).
 */
// BENCH_CHANNELS=N/2 gives every agent a connection of its own, as real agents have: the controller then accepts
// them one per turn of its event loop (Node 20's libuv accepts one connection per poll), which a storm's long turns
// make the slowest part of a cold start (see bench/results/controller-scale.md).
const CHANNELS = Number(process.env.BENCH_CHANNELS ?? 32);
const FLOW_CONTROL_WINDOW = 8 * 1024 * 1024;
const waiters: (() => boolean)[] = [];
/** Join written -> first snapshot received, per connect (for finding where cold start time goes). */
const joinMs: number[] = [];
/** Join streams that ended before their snapshot arrived (each retried on the agent's schedule). */
let failedJoins = 0;

function reply(id: number, body: object): void {
  process.send!({ id, ...body });
}

function checkWaiters(): void {
  for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i]()) waiters.splice(i, 1);
}

const serialize = (m: AgentMessage) => Buffer.from(AgentMessage.encode(m).finish());
const identity = (b: Buffer) => b;

const encode = (m: AgentMessage) => AgentMessage.encode(m).finish();

/**
 * AgentMessage{ack: {revision}} as bytes, written by hand (field 2, holding Ack's field 1): what
 * AgentMessage.encode writes (checked at start-up below), without a writer per message (0.2 us
 * instead of 1.4 us, measured; one per message received).
 */
export function ackMessage(revision: number): Uint8Array {
  const varint: number[] = [];
  for (let v = revision; ; ) {
    const low = v % 0x80;
    v = Math.floor(v / 0x80);
    varint.push(v > 0 ? low | 0x80 : low);
    if (v === 0) break;
  }
  return revision === 0 ? Uint8Array.of(0x12, 0) : Uint8Array.of(0x12, varint.length + 1, 0x08, ...varint);
}
for (const rev of [0, 1, 127, 128, 300, 2 ** 31 + 5]) {
  if (Buffer.compare(Buffer.from(ackMessage(rev)), Buffer.from(encode({ msg: { $case: "ack", value: { revision: rev, error: "" } } }))) !== 0) throw new Error(`sim-fleet: hand-written ack for revision ${rev} differs from AgentMessage.encode`);
}

/** Opens the agent's stream and sends Join; reconnects when the stream ends, on the agent's own schedule. */
function connect(a: Agent): Promise<void> {
  return new Promise((resolve) => {
    let resolved = false;
    const before = a.snapshots;
    const started = performance.now();
    const again = () => {
      if (a.closed) return resolve();
      if (!resolved) failedJoins++;
      setTimeout(() => void connect(a).then(() => !resolved && ((resolved = true), resolve())), a.reconnect.next().delayMs);
    };
    const call = channels[a.index % CHANNELS].open(
      "/weft.v1.Controller/Join",
      (buf) => {
        const revision = a.apply(buf);
        call.write(ackMessage(revision));
        if (!resolved && a.snapshots > before) {
          resolved = true;
          a.reconnect.succeeded();
          joinMs.push(performance.now() - started);
          resolve();
        }
        checkWaiters();
      },
      again,
    );
    a.call = call;
    call.write(encode({ msg: { $case: "join", value: a.request } }));
  });
}

async function handle(c: Command): Promise<void> {
  switch (c.cmd) {
    case "init":
      ({ address, network, capacity } = c);
      networkBytes = Buffer.from(network);
      channels = Array.from({ length: CHANNELS }, () => new H2Channel(address, c.agentWindow ? undefined : FLOW_CONTROL_WINDOW));
      process.send!({ ready: true });
      return;
    case "join": {
      let next = c.from;
      const t0 = EPOCH();
      await Promise.all(
        Array.from({ length: c.concurrency }, async () => {
          while (next < c.to) {
            const i = next++;
            const a = new Agent(i, { ...simJoinRequest(nodeName(i), i + 1, [network]), nodeName: nodeName(i) }, capacity);
            agents.set(i, a);
            await connect(a);
          }
        }),
      );
      return reply(c.id, { joinedMs: EPOCH() - t0 });
    }
    case "waitPeers": {
      const done = () => {
        for (const a of agents.values()) if (a.count < c.peers || (c.snapshotAfter !== undefined && a.lastSnapshotAt < c.snapshotAfter)) return false;
        reply(c.id, { at: EPOCH() });
        return true;
      };
      if (!done()) waiters.push(done);
      return;
    }
    case "expect": {
      const times: number[] = [];
      let pending = agents.size;
      for (const a of agents.values()) {
        if (a.peers[c.node]) {
          times.push(EPOCH());
          pending--;
          continue;
        }
        a.onPeer = (i) => {
          if (i !== c.node) return;
          a.onPeer = undefined;
          times.push(EPOCH());
          if (--pending === 0) reply(c.id, { times });
        };
      }
      if (pending === 0) reply(c.id, { times });
      return;
    }
    case "leave":
      for (let i = c.from; i < c.to; i++) {
        const a = agents.get(i);
        if (!a) continue;
        a.closed = true;
        a.call?.cancel();
        agents.delete(i);
      }
      return reply(c.id, {});
    case "stats": {
      let min = Infinity;
      let snapshots = 0;
      for (const a of agents.values()) {
        min = Math.min(min, a.count);
        snapshots += a.snapshots;
      }
      const sorted = [...joinMs].sort((x, y) => x - y);
      const cpu = process.cpuUsage();
      return reply(c.id, {
        agents: agents.size,
        minPeers: min,
        snapshots,
        rssMB: process.memoryUsage().rss / 1e6,
        cpuS: (cpu.user + cpu.system) / 1e6,
        joinP50: sorted[Math.floor(sorted.length / 2)] ?? 0,
        joinP99: sorted[Math.floor(sorted.length * 0.99)] ?? 0,
        failedJoins,
      });
    }
  }
}

process.on("message", (c: Command) => {
  handle(c).catch((err) => {
    process.stderr.write(`sim-fleet: ${String(err)}\n`);
    process.exit(1);
  });
});
process.on("disconnect", () => process.exit(0));
