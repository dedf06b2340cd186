// Relays the node's endpoints (what the `weft` CNI plugin reported to the
// EndpointServer) to the controller on the Join stream: the complete set right
// after every Join on a new stream (the controller may have lost what it had,
// or be another replica), then the changes, coalesced by endpoint id and sent
// on the next turn of the event loop. Nothing queues while no stream is open:
// the next stream starts with the complete set anyway, so the pending
// changes are bounded by the node's endpoints.
import type { Endpoint as WireEndpoint, EndpointReport } from "../api/index.js";
import type { Endpoint } from "../cni/endpoint.js";

export function toWireEndpoint(e: Endpoint): WireEndpoint {
  return { id: e.id, nodeName: "", network: e.network, name: e.name, aliases: e.aliases, ips: e.ips, mac: e.mac };
}

export interface EndpointRelayOptions {
  /** The node's endpoints now (persisted). */
  list: () => Endpoint[];
  /** Writes a report on stream `epoch` (dropped when that stream is gone). */
  send: (epoch: number, report: EndpointReport) => void;
}

export class EndpointRelay {
  private epoch?: number;
  /** id -> the endpoint as it is now, or undefined: detached. */
  private readonly pending = new Map<string, Endpoint | undefined>();
  private timer?: NodeJS.Immediate;

  constructor(private readonly opts: EndpointRelayOptions) {}

  /** A new stream's Join was written: the complete set follows it. */
  joined(epoch: number): void {
    this.epoch = epoch;
    this.pending.clear();
    this.opts.send(epoch, { full: true, endpoints: this.opts.list().map(toWireEndpoint), removed: [] });
  }

  /** The stream ended. */
  disconnected(epoch: number): void {
    if (this.epoch !== epoch) return;
    this.epoch = undefined;
    this.pending.clear();
  }

  /** The EndpointServer persisted a change. */
  changed(changed: Endpoint[], removed: Endpoint[]): void {
    if (this.epoch === undefined) return;
    for (const e of removed) this.pending.set(e.id, undefined);
    for (const e of changed) this.pending.set(e.id, e);
    this.timer ??= setImmediate(() => this.flush());
  }

  private flush(): void {
    this.timer = undefined;
    if (this.epoch === undefined || this.pending.size === 0) return;
    const report: EndpointReport = { full: false, endpoints: [], removed: [] };
    for (const [id, e] of this.pending) {
      if (e) report.endpoints.push(toWireEndpoint(e));
      else report.removed.push(id);
    }
    this.pending.clear();
    this.opts.send(this.epoch, report);
  }

  stop(): void {
    if (this.timer) clearImmediate(this.timer);
    this.timer = undefined;
    this.epoch = undefined;
  }
}
