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
