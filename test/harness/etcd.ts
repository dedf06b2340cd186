import { EtcdProcess } from "../../pkg/lab/etcd.js";

/**
 * Mocha helper: a real etcd for the enclosing `describe`, started before its
 * tests and always stopped after them (also when they fail).
 *
 *   const etcd = useEtcd();
 *   it("...", () => client(etcd.endpoint) ...)
 */
export function useEtcd(): { readonly endpoint: string; readonly process: EtcdProcess } {
  let proc: EtcdProcess | undefined;
  before(async function () {
    this.timeout(60_000);
    proc = await EtcdProcess.start();
  });
  after(async function () {
    this.timeout(30_000);
    await proc?.stop();
  });
  return {
    get endpoint() {
      if (!proc) throw new Error("etcd not started yet (use it inside it()/before())");
      return proc.endpoint;
    },
    get process() {
      if (!proc) throw new Error("etcd not started yet");
      return proc;
    },
  };
}
