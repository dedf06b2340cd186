// Mocha helper around KubeApiServer: one real kube-apiserver (with its own
// etcd) for the enclosing describe, always stopped after it.
import { KubeApiServer } from "./kube-apiserver.js";

export { KubeApiServer, kubeApiServerBinary, type KubeUser } from "./kube-apiserver.js";

/**
 *   const kube = useKubeApiServer();
 *   it("...", async () => { await kube.api.kubectl(["get", "nodes"]); });
 */
export function useKubeApiServer(): { readonly api: KubeApiServer } {
  let api: KubeApiServer | undefined;
  before(async function () {
    // The first run may build kube-apiserver (hack/build-kube-apiserver.sh); a cached one starts in seconds.
    this.timeout(40 * 60_000);
    api = await KubeApiServer.start();
  });
  after(async function () {
    this.timeout(60_000);
    await api?.stop();
  });
  return {
    get api() {
      if (!api) throw new Error("kube-apiserver not started yet (use it inside it()/before())");
      return api;
    },
  };
}
