import assert from "node:assert/strict";
import { Etcd3 } from "etcd3";
import { useEtcd } from "../harness/etcd.js";

describe("test harness: real etcd", () => {
  const etcd = useEtcd();
  it("stores and reads back a key", async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      await client.put("/weft/smoke").value("1");
      assert.equal(await client.get("/weft/smoke").string(), "1");
    } finally {
      client.close();
    }
  });
});
