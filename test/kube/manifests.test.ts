// What deploy/ asks of the cluster, read from `kubectl kustomize deploy/`:
// the properties the design relies on, and WEFT_* variables that are real flags
// of the commands (so manifests and command lines cannot drift apart).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execa } from "execa";
import YAML from "yaml";
import { commandArgv } from "../harness/cli.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

// Manifests are loosely typed: the tests check them field by field.
type Obj = { kind: string; metadata: { name: string; namespace?: string }; spec: any };
type Container = { name: string; command: string[]; env?: Array<{ name: string; value?: string; valueFrom?: any }>; ports?: Array<{ name: string; containerPort: number }>; securityContext?: any; livenessProbe?: any; readinessProbe?: any; resources?: any };

async function helpOf(cmd: "weft-controller" | "weft-agent"): Promise<string> {
  return String((await execa("node", [...commandArgv(cmd), "--help"], { cwd: ROOT })).stdout);
}

function flagOf(envName: string): string {
  return `--${envName.replace(/^WEFT_/, "").toLowerCase().replace(/_/g, "-")}`;
}

function env(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.value;
}

describe("deploy/ manifests", function () {
  this.timeout(60_000);
  let objs: Obj[];
  const get = (kind: string, name: string) => {
    const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
    assert.ok(o, `${kind}/${name} missing from deploy/`);
    return o;
  };

  before(async () => {
    const out = await execa("kubectl", ["kustomize", path.join(ROOT, "deploy")]);
    objs = YAML.parseAllDocuments(String(out.stdout)).map((d) => d.toJSON() as Obj);
  });

  it("agent DaemonSet: host network, NET_ADMIN+NET_RAW without privilege, every taint tolerated, node name from the downward API", () => {
    const ds = get("DaemonSet", "weft-agent").spec.template.spec;
    assert.equal(ds.hostNetwork, true);
    assert.equal(ds.priorityClassName, "system-node-critical");
    assert.deepEqual(ds.tolerations, [{ operator: "Exists" }]);
    assert.equal(ds.automountServiceAccountToken, false);
    const agent = ds.containers.find((c: Container) => c.name === "agent") as Container;
    assert.equal(agent.securityContext.privileged, false);
    assert.deepEqual([...agent.securityContext.capabilities.add].sort(), ["NET_ADMIN", "NET_RAW"]);
    assert.deepEqual(agent.securityContext.capabilities.drop, ["ALL"]);
    assert.deepEqual(agent.env?.find((e) => e.name === "WEFT_NODE_NAME")?.valueFrom, { fieldRef: { fieldPath: "spec.nodeName" } });
    const hostPaths = ds.volumes.filter((v: { hostPath?: unknown }) => v.hostPath).map((v: { hostPath: { path: string } }) => v.hostPath.path).sort();
    assert.deepEqual(hostPaths, ["/etc/cni/net.d", "/opt/cni/bin", "/run/xtables.lock", "/var/lib/weft"]);
    const metricsPort = agent.ports?.find((p) => p.name === "metrics")?.containerPort;
    assert.equal(env(agent, "WEFT_METRICS_ADDR"), `0.0.0.0:${metricsPort}`);
    assert.equal(agent.livenessProbe.httpGet.path, "/healthz");
    assert.equal(agent.readinessProbe.httpGet.path, "/readyz");
    assert.equal(agent.readinessProbe.httpGet.port, "metrics");
    // No node key: the agent presents its projected ServiceAccount token (the controller's audience, short-lived).
    assert.equal(env(agent, "WEFT_TLS_CERT"), undefined);
    assert.equal(env(agent, "WEFT_TLS_KEY"), undefined);
    const identity = ds.volumes.find((v: { name: string }) => v.name === "identity").projected.sources;
    const sat = identity.find((s: { serviceAccountToken?: unknown }) => s.serviceAccountToken).serviceAccountToken;
    assert.deepEqual(sat, { audience: "weft-controller", expirationSeconds: 3600, path: "token" });
    assert.equal(env(agent, "WEFT_TOKEN_FILE"), "/var/run/secrets/weft/token");
    const controller = (get("Deployment", "weft-controller").spec.template.spec.containers as Container[])[0];
    assert.equal(env(controller, "WEFT_AGENT_TOKEN_AUDIENCE"), sat.audience);
  });

  it("controller Deployment: 2 non-root replicas on the host network, read-only root, probes on the metrics port, reached through its Service", () => {
    const dep = get("Deployment", "weft-controller").spec;
    assert.equal(dep.replicas, 2);
    const pod = dep.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.ok(pod.tolerations.some((t: { key?: string }) => t.key === "node-role.kubernetes.io/control-plane"));
    const c = pod.containers[0] as Container;
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.ok(c.resources.requests.cpu && c.resources.limits.memory);
    const port = (name: string) => c.ports?.find((p) => p.name === name)?.containerPort;
    assert.equal(env(c, "WEFT_METRICS_ADDR"), `0.0.0.0:${port("metrics")}`);
    assert.equal(env(c, "WEFT_LISTEN"), `0.0.0.0:${port("grpc")}`);
    assert.equal(c.livenessProbe.httpGet.path, "/healthz");
    assert.equal(c.readinessProbe.httpGet.path, "/readyz");
    assert.deepEqual(c.env?.find((e) => e.name === "WEFT_ETCD_ENDPOINTS")?.valueFrom, { secretKeyRef: { name: "weft-etcd", key: "endpoints" } });
    const svc = get("Service", "weft-controller").spec;
    assert.deepEqual(svc.selector, dep.selector.matchLabels);
    assert.ok(svc.ports.some((p: { name: string; targetPort: string }) => p.name === "grpc" && p.targetPort === "grpc"));
    // The agents' controller address is built from this Service's environment variables.
    const agent = get("DaemonSet", "weft-agent").spec.template.spec.containers.find((x: Container) => x.name === "agent") as Container;
    assert.equal(env(agent, "WEFT_CONTROLLER"), "$(WEFT_CONTROLLER_SERVICE_HOST):$(WEFT_CONTROLLER_SERVICE_PORT_GRPC)");
  });

  it("every WEFT_* variable in the manifests is a flag of the command it configures", async () => {
    for (const [kind, name, cmd] of [["Deployment", "weft-controller", "weft-controller"], ["DaemonSet", "weft-agent", "weft-agent"]] as const) {
      const help = await helpOf(cmd);
      const c = (get(kind, name).spec.template.spec.containers as Container[])[0];
      assert.ok(c.command.join(" ").endsWith(`dist/bundle/${cmd}/main.js`), `${name} runs ${c.command.join(" ")}, not the bundle`);
      for (const e of c.env ?? []) {
        if (!e.name.startsWith("WEFT_")) continue;
        assert.ok(help.includes(flagOf(e.name)), `${name}: ${e.name} is not a flag of ${cmd} (no ${flagOf(e.name)} in --help)`);
      }
    }
  });

  it("the image deploy/Dockerfile builds has what the manifests run: the entry points, the CNI plugins the init container copies, the user", async () => {
    const dockerfile = fs.readFileSync(path.join(ROOT, "deploy/Dockerfile"), "utf8");
    const runtime = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
    assert.match(runtime, /^WORKDIR \/app$/m);
    assert.match(runtime, /^COPY --from=build \/src\/dist dist$/m);
    assert.match(runtime, /^USER 65532:65532$/m);
    const packages = /apt-get install[^\n]*?((?:\s[a-z0-9][a-z0-9.+-]*)+)/.exec(runtime.replace(/\\\n/g, " "))?.[1].trim().split(/\s+/) ?? [];
    for (const pkg of ["iproute2", "iptables", "containernetworking-plugins"]) assert.ok(packages.includes(pkg), `the image does not install ${pkg}: ${packages.join(" ")}`);
    // Every entry point the manifests run exists in the build output the image copies to /app/dist.
    for (const [kind, name] of [["Deployment", "weft-controller"], ["DaemonSet", "weft-agent"]] as const) {
      const c = (get(kind, name).spec.template.spec.containers as Container[])[0];
      const script = c.command.find((a) => a.startsWith("/app/dist/"))!;
      assert.ok(fs.existsSync(path.join(ROOT, script.replace(/^\/app\//, ""))), `${script} is not built (make build)`);
    }
    assert.equal(get("Deployment", "weft-controller").spec.template.spec.securityContext.runAsUser, 65532);
    // The init container copies plugins out of /usr/lib/cni, where Debian's package puts them.
    const init = get("DaemonSet", "weft-agent").spec.template.spec.initContainers[0] as Container;
    const plugins = /for p in ([a-z -]+); do/.exec(init.command.join(" "))![1].trim().split(" ");
    const installed = String((await execa("dpkg", ["-L", "containernetworking-plugins"])).stdout).split("\n");
    for (const p of plugins) assert.ok(installed.includes(`/usr/lib/cni/${p}`), `containernetworking-plugins has no /usr/lib/cni/${p}`);
    // The conflist the agent writes names only plugins the init containers provide: Debian's, and `weft` from the build output.
    assert.ok(["bridge", "host-local", "portmap"].every((p) => plugins.includes(p)), plugins.join(" "));
    const weft = (get("DaemonSet", "weft-agent").spec.template.spec.initContainers as Container[]).find((c) => c.name === "install-weft-plugin")!;
    const script = weft.command.join(" ");
    assert.match(script, /mv \$d\/weft\.tmp \$d\/weft$/, "installs the plugin under its type name, by rename");
    const bundle = /cp (\/app\/dist\/\S+) /.exec(script)![1];
    assert.ok(fs.existsSync(path.join(ROOT, bundle.replace(/^\/app\//, ""))), `${bundle} is not built (make build)`);
    assert.match(dockerfile, /hack\/bundle\.sh/, "the image's build stage bundles the plugin");
  });
});
