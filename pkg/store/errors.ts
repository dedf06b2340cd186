// Errors the store raises that callers tell apart.

export class PoolExhaustedError extends Error {
  constructor(readonly network: string, readonly cidr: string, readonly capacity: number) {
    super(`network ${network}: pool ${cidr} is exhausted (all ${capacity} node subnets are leased)`);
  }
}

export class NodeGoneError extends Error {
  constructor(readonly node: string) {
    super(`node ${node} is not registered (removed, or its lease expired)`);
  }
}

export class ConflictError extends Error {}

/** A value stored under `key` does not decode (its schema's problems in the message). */
export class InvalidRecordError extends Error {
  constructor(readonly key: string, readonly kind: string, readonly problem: string) {
    super(`${key}: stored ${kind} does not decode: ${problem}`);
  }
}

/** A leader-only write found that this replica no longer holds the leader key; nothing was written. */
export class NotLeaderError extends Error {
  constructor() {
    super("this replica no longer holds the leader key; leader-only write abandoned");
  }
}
