// Registrations that arrive together are committed in one etcd transaction.
//
// A join storm (N agents connecting at once) is N registration txns, each a
// raft write, a watch event and a response through the etcd client. While a
// transaction is in flight the next registrations queue here and go as one:
// every compare of every registration in one txn, so it commits only if all
// of them hold. When it does not (a race lost, a lease gone), each
// registration is retried alone, so a loser learns exactly which subnets were
// taken and the others still commit. A registration that finds nothing in
// flight goes at once: a lone join waits for nothing.
import type { ICompare, IRequestOp } from "etcd3";
import type { EtcdKv } from "./etcd.js";
import { commitNode, nodeTxn, type CommitResult, type NodeState, type NodeWrite } from "./nodes.js";

/** Compares (and writes) per transaction: under etcd's default --max-txn-ops of 128. */
const MAX_TXN_OPS = 120;
/** Transactions in flight at once; more registrations wait and are batched. */
const MAX_IN_FLIGHT = 2;

interface Item {
  state: NodeState;
  write: NodeWrite;
  compare: ICompare[];
  ops: IRequestOp[];
  keys: string[];
  resolve: (r: CommitResult) => void;
  reject: (err: unknown) => void;
}

export class CommitBatcher {
  private queue: Item[] = [];
  private inFlight = 0;

  constructor(private readonly etcd: EtcdKv) {}

  commit(state: NodeState, write: NodeWrite): Promise<CommitResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ state, write, ...nodeTxn(this.etcd, state, write), resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    while (this.inFlight < MAX_IN_FLIGHT && this.queue.length > 0) {
      const batch = this.take();
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.kick();
      });
    }
  }

  /** The longest prefix-ordered set of queued registrations that fits one txn and writes no key twice (etcd refuses that). */
  private take(): Item[] {
    const batch: Item[] = [];
    const rest: Item[] = [];
    const keys = new Set<string>();
    let compares = 0;
    let ops = 0;
    for (const it of this.queue) {
      const fits = batch.length === 0 || (compares + it.compare.length <= MAX_TXN_OPS && ops + it.ops.length <= MAX_TXN_OPS && !it.keys.some((k) => keys.has(k)));
      if (!fits) {
        rest.push(it);
        continue;
      }
      batch.push(it);
      compares += it.compare.length;
      ops += it.ops.length;
      it.keys.forEach((k) => keys.add(k));
    }
    this.queue = rest;
    return batch;
  }

  private async run(batch: Item[]): Promise<void> {
    if (batch.length > 1) {
      try {
        const res = await this.etcd.txn(
          "register_nodes",
          batch.flatMap((it) => it.compare),
          batch.flatMap((it) => it.ops),
        );
        if (res.succeeded) {
          const revision = Number(res.header.revision);
          for (const it of batch) it.resolve({ ok: true, revision });
          return;
        }
      } catch {
        // e.g. one registration's etcd lease expired: each one alone says whose.
      }
    }
    await Promise.all(batch.map((it) => commitNode(this.etcd, it.state, it.write).then(it.resolve, it.reject)));
  }
}
