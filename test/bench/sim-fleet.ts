// A fleet of simulated agents in its own process (the controller benchmark
// forks two or more of these, never running agents in the controller's
// process). Each agent is a real gRPC Join stream speaking proto/weft/v1: it
// sends Join (with its VTEP MAC, as the agent does from its state dir),
// decodes every ConfigUpdate off the wire, applies snapshot and deltas to
// its peer set and acknowledges every revision. To keep 2500 agents x 5000
// peers affordable, the decoder reads only what the benchmark checks (peer
// names, the node's own subnet) and a peer set is a bitmap over node indexes.
//
// Commands arrive over the IPC channel from the parent; see Command below.
import * as grpc from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { ReconnectPolicy } from "../../pkg/agent/index.js";
import { AgentMessage, JoinRequest } from "../../pkg/api/index.js";
import { simJoinRequest } from "../harness/sim-agent.js";

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

// Each failed reconnect attempt (while the controller is down) makes grpc-js
// create an Error, and under tsx every stack is mapped through source maps:
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
  call?: grpc.ClientDuplexStream<AgentMessage, Buffer>;
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
  apply(buf: Buffer, network: string): number {
    const r = new BinaryReader(buf);
    let revision = 0;
    let snapshot = false;
    const netPeers: number[] = [];
    let netSeen = false;
    let removedNet = false;
    const updates: [number, boolean][] = [];
    while (r.pos < r.len) {
      const tag = r.uint32();
      const field = tag >>> 3;
      if (field === 1) revision = Number(r.int64());
      else if (field === 2) snapshot = r.bool();
      else if (field === 3) {
        const end = r.uint32() + r.pos;
        let name = "";
        const peers: number[] = [];
        let subnet = "";
        while (r.pos < end) {
          const t = r.uint32();
          const f = t >>> 3;
          if (f === 1) name = r.string();
          else if (f === 10) subnet = r.string();
          else if (f === 12) {
            const pend = r.uint32() + r.pos;
            // node_name is the Peer's field 1 and comes first on the wire: read it, jump past the rest
            // (a restart at N=5000 delivers 25 M peer elements; skipping field by field was most of this process's CPU).
            while (r.pos < pend) {
              const pt = r.uint32();
              if (pt >>> 3 === 1) {
                peers.push(nodeIndex(r, buf));
                r.pos = pend;
              } else r.skip(pt & 7);
            }
          } else r.skip(t & 7);
        }
        if (name === network) {
          netSeen = true;
          this.subnet = subnet;
          netPeers.push(...peers);
        }
      } else if (field === 4) {
        if (r.string() === network) removedNet = true;
      } else if (field === 5) {
        const end = r.uint32() + r.pos;
        let net = "";
        let node = -1;
        let removed = false;
        while (r.pos < end) {
          const t = r.uint32();
          const f = t >>> 3;
          if (f === 1) net = r.string();
          else if (f === 2) {
            const pend = r.uint32() + r.pos;
            while (r.pos < pend) {
              const pt = r.uint32();
              if (pt >>> 3 === 1) node = nodeIndex(r, buf);
              else r.skip(pt & 7);
            }
          } else if (f === 3) removed = r.bool();
          else r.skip(t & 7);
        }
        if (net === network) updates.push([node, removed]);
      } else r.skip(tag & 7);
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
    for (const [p, removed] of updates) this.set(p, !removed);
    return revision;
  }
}

/** Reads a node_name field ("node-<i>") as its index, straight from the bytes: a string per peer per message was most of the decoding. */
function nodeIndex(r: BinaryReader, buf: Uint8Array): number {
  const len = r.uint32();
  const end = r.pos + len;
  let v = 0;
  for (let i = r.pos + 5; i < end; i++) v = v * 10 + buf[i] - 48;
  r.pos = end;
  return v;
}

let address = "";
let network = "";
let capacity = 0;
const agents = new Map<number, Agent>();
let clients: grpc.Client[] = [];
/**
 * Channels (HTTP/2 connections) per fleet process, and each one's receive
 * window. A real agent has a connection of its own with HTTP/2's 64 KiB
 * window; here one connection carries N/64 agents' streams, and with the
 * default window all their snapshots would queue behind one 64 KiB
 * connection window (a bottleneck of the simulation, not of the controller:
 * the N=5000 restart pushes 1.6 GB of snapshots). 8 MiB per connection is
 * about as much window as its N/64 agents would have had at N=5000. grpc-js
 * gives a stream the same window, more than an agent's 64 KiB (a real agent
 * needs a few window round trips for a 325 KB snapshot).
 */
const CHANNELS = 32;
const FLOW_CONTROL_WINDOW = 8 * 1024 * 1024;
const waiters: (() => boolean)[] = [];
/** Join written -> first snapshot received, per connect (for finding where cold start time goes). */
const joinMs: number[] = [];

function reply(id: number, body: object): void {
  process.send!({ id, ...body });
}

function checkWaiters(): void {
  for (let i = waiters.length - 1; i >= 0; i--) if (waiters[i]()) waiters.splice(i, 1);
}

const serialize = (m: AgentMessage) => Buffer.from(AgentMessage.encode(m).finish());
const identity = (b: Buffer) => b;

/** Opens the agent's stream and sends Join; reconnects when the stream ends, on the agent's own schedule. */
function connect(a: Agent): Promise<void> {
  return new Promise((resolve) => {
    let resolved = false;
    const client = clients[a.index % CHANNELS];
    const call = client.makeBidiStreamRequest<AgentMessage, Buffer>("/weft.v1.Controller/Join", serialize, identity);
    a.call = call;
    const before = a.snapshots;
    const started = performance.now();
    call.on("data", (buf: Buffer) => {
      const revision = a.apply(buf, network);
      call.write({ msg: { $case: "ack", value: { revision, error: "" } } });
      if (!resolved && a.snapshots > before) {
        resolved = true;
        a.reconnect.succeeded();
        joinMs.push(performance.now() - started);
        resolve();
      }
      checkWaiters();
    });
    let ended = false;
    const again = () => {
      if (ended) return;
      ended = true;
      if (a.closed) return resolve();
      setTimeout(() => void connect(a).then(() => !resolved && ((resolved = true), resolve())), a.reconnect.next().delayMs);
    };
    call.on("error", again);
    call.on("end", again);
    call.on("status", () => undefined);
    call.write({ msg: { $case: "join", value: a.request } });
  });
}

async function handle(c: Command): Promise<void> {
  switch (c.cmd) {
    case "init":
      ({ address, network, capacity } = c);
      clients = Array.from({ length: CHANNELS }, () => new grpc.Client(address, grpc.credentials.createInsecure(), {
          "grpc.use_local_subchannel_pool": 1,
          "grpc.max_receive_message_length": 64 * 1024 * 1024,
          // The agent dials a fresh channel per attempt (no channel backoff, its own 250 ms base); a channel shared by
          // many simulated agents must not add grpc-js' 1 s x 1.6 reconnect backoff on top of their 100-300 ms retry.
          ...(c.agentWindow ? {} : { "grpc-node.flow_control_window": FLOW_CONTROL_WINDOW }),
          "grpc.initial_reconnect_backoff_ms": 100,
          "grpc.max_reconnect_backoff_ms": 300,
        }));
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
