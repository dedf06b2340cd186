// Subnets chosen by registrations of this replica that the view does not
// show yet. A join storm commits registrations in shared transactions
// (store/commit-batch.ts), and one stale choice fails its whole batch: every
// registration in it is then retried alone. Between choosing a subnet and
// the view showing the committed lease there are a round trip and a watch
// event, during which another join would see the subnet as free; holding
// the choice here closes that window within one replica (etcd's compares
// still decide between replicas).
export class SubnetReservations {
  private readonly byNetwork = new Map<string, Map<string, string>>();

  /** Held by another node than `node`. */
  heldByOther(network: string, subnet: string, node: string): boolean {
    const holder = this.byNetwork.get(network)?.get(subnet);
    return holder !== undefined && holder !== node;
  }

  /** The subnets of `network` held, by anyone. */
  held(network: string): ReadonlyMap<string, string> {
    return this.byNetwork.get(network) ?? new Map();
  }

  hold(network: string, subnet: string, node: string): void {
    let m = this.byNetwork.get(network);
    if (!m) this.byNetwork.set(network, (m = new Map()));
    m.set(subnet, node);
  }

  /** Lets go of `node`'s hold (a newer hold of the subnet by another node stays). */
  release(network: string, subnet: string, node: string): void {
    const m = this.byNetwork.get(network);
    if (m?.get(subnet) !== node) return;
    m.delete(subnet);
    if (m.size === 0) this.byNetwork.delete(network);
  }
}
