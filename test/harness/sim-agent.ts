// A simulated agent: a real gRPC client speaking the Join protocol to a real
// controller, with no kernel behind it. It keeps the desired config the way
// the agent does and acknowledges every update. Used by controller tests that
// need hundreds of agents in one process (the controller benchmark runs its
// agents in worker processes instead: test/bench/sim-fleet.ts).
import * as grpc from "@grpc/grpc-js";
import {
  applyConfigUpdate,
  ControllerClient,
  emptyDesired,
  type AgentMessage,
  type ConfigUpdate,
  type DesiredConfig,
  type JoinRequest,
} from "../../pkg/api/index.js";
import { waitFor } from "../../pkg/lab/ports.js";

export interface SimAgentOptions {
  credentials?: grpc.ChannelCredentials;
  autoAck?: boolean;
  /** Called for every update received (after it is merged). */
  onUpdate?: (u: ConfigUpdate, at: number) => void;
  /** Share one channel between many agents (benchmarks). */
  client?: ControllerClient;
}

export function simJoinRequest(name: string, i: number, networks: string[] = []): JoinRequest {
  const mac = (n: number) => `02:${[(i >> 16) & 255, (i >> 8) & 255, i & 255, n, 1].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  return {
    nodeName: name,
    underlayIp: `172.20.${(i >> 8) & 255}.${i & 255}`,
    labels: {},
    agentVersion: "sim",
    vtepMacs: Object.fromEntries(networks.map((n, k) => [n, mac(k)])),
    previousSubnets: {},
    uplinkMtu: 1500,
  };
}

export class SimAgent {
  desired: DesiredConfig = emptyDesired();
  snapshots = 0;
  updates = 0;
  /** Final status of the stream, once it ended. */
  status?: grpc.StatusObject | grpc.ServiceError;
  private call?: grpc.ClientDuplexStream<AgentMessage, ConfigUpdate>;
  private readonly client: ControllerClient;
  private readonly ownsClient: boolean;

  constructor(
    readonly address: string,
    public request: JoinRequest,
    private readonly opts: SimAgentOptions = {},
  ) {
    this.ownsClient = !opts.client;
    this.client = opts.client ?? new ControllerClient(address, opts.credentials ?? grpc.credentials.createInsecure());
  }

  get ended(): boolean {
    return this.status !== undefined;
  }

  /** Opens the stream and sends `join`; resolves on the first snapshot, rejects if the stream fails first. */
  connect(timeoutMs = 30_000): Promise<void> {
    this.status = undefined;
    const firstSnapshot = this.snapshots + 1;
    const call = this.client.join();
    this.call = call;
    call.on("data", (u: ConfigUpdate) => {
      this.merge(u);
      if (u.snapshot) this.snapshots++;
      else this.updates++;
      this.opts.onUpdate?.(u, performance.now());
      if (this.opts.autoAck !== false) this.send({ msg: { $case: "ack", value: { revision: u.revision, error: "" } } });
    });
    call.on("error", (err: grpc.ServiceError) => (this.status = err));
    call.on("status", (s: grpc.StatusObject) => (this.status ??= s));
    call.on("end", () => (this.status ??= { code: grpc.status.OK, details: "ended", metadata: new grpc.Metadata() }));
    this.send({ msg: { $case: "join", value: this.request } });
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      const poll = () => {
        if (this.snapshots >= firstSnapshot) return resolve();
        if (this.status) return reject(Object.assign(new Error(`stream ended: ${this.status.details}`), { code: this.status.code }));
        if (Date.now() > deadline) return reject(new Error(`no snapshot for ${this.request.nodeName} within ${timeoutMs} ms`));
        setTimeout(poll, 10);
      };
      poll();
    });
  }

  private merge(u: ConfigUpdate): void {
    if (u.snapshot || u.networks.length > 0 || u.removedNetworks.length > 0 || u.endpointUpdates.length > 0) {
      this.desired = applyConfigUpdate(this.desired, u);
      return;
    }
    // Peer-only deltas are merged in place: benchmarks run 1000 agents that each
    // get 1000 updates, and the agent's copy-on-write merge would dominate.
    for (const p of u.peerUpdates) {
      const peers = this.desired.networks.get(p.network)?.peers;
      if (!peers || !p.peer) continue;
      if (p.removed) peers.delete(p.peer.nodeName);
      else peers.set(p.peer.nodeName, p.peer);
    }
    this.desired.revision = Math.max(this.desired.revision, u.revision);
  }

  /** Stops reading the stream (the transport's flow control then stalls the controller's writes). */
  stall(): void {
    this.call?.pause();
  }

  /** Reads again. */
  unstall(): void {
    this.call?.resume();
  }

  send(msg: AgentMessage): void {
    this.call?.write(msg);
  }

  /** Re-sends join with changed fields (e.g. new VTEP MACs). */
  rejoin(changes: Partial<JoinRequest>): void {
    this.request = { ...this.request, ...changes };
    this.send({ msg: { $case: "join", value: this.request } });
  }

  subnet(network: string): string | undefined {
    return this.desired.networks.get(network)?.subnet || undefined;
  }

  peers(network: string): string[] {
    return [...(this.desired.networks.get(network)?.peers.keys() ?? [])].sort();
  }

  /** Waits for the stream to end and returns its status. */
  async waitEnded(timeoutMs = 10_000): Promise<grpc.StatusObject | grpc.ServiceError> {
    await waitFor(`stream of ${this.request.nodeName} to end`, () => this.ended, timeoutMs, 10);
    return this.status!;
  }

  close(): void {
    this.call?.cancel();
    this.call = undefined;
    if (this.ownsClient) this.client.close();
  }
}
