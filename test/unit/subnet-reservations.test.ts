// SubnetReservations: subnets chosen by in-flight registrations (pure).
import assert from "node:assert/strict";
import { SubnetReservations } from "../../pkg/controller/reservations.js";

describe("controller subnet reservations (pure)", () => {
  it("a held subnet is taken for every other node, not for its holder", () => {
    const r = new SubnetReservations();
    r.hold("n1", "10.0.1.0/24", "a");
    assert.equal(r.heldByOther("n1", "10.0.1.0/24", "b"), true);
    assert.equal(r.heldByOther("n1", "10.0.1.0/24", "a"), false);
    assert.equal(r.heldByOther("n2", "10.0.1.0/24", "b"), false, "holds are per network");
    assert.deepEqual([...r.held("n1")], [["10.0.1.0/24", "a"]]);
  });

  it("release lets go of the node's own hold only, and empties", () => {
    const r = new SubnetReservations();
    r.hold("n1", "10.0.1.0/24", "a");
    r.release("n1", "10.0.1.0/24", "b");
    assert.equal(r.held("n1").size, 1, "another node's release leaves the hold");
    r.hold("n1", "10.0.1.0/24", "b"); // a retried registration took it over
    r.release("n1", "10.0.1.0/24", "a");
    assert.equal(r.heldByOther("n1", "10.0.1.0/24", "c"), true, "the older holder's release leaves the newer hold");
    r.release("n1", "10.0.1.0/24", "b");
    assert.equal(r.held("n1").size, 0);
  });
});
