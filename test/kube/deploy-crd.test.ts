// deploy/ against a real kube-apiserver: every object is accepted, and the
// OverlayNetwork CRD's schema and CEL rules reject bad input with a message
// naming the field.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import YAML from "yaml";
import { overlayNetworkToSpec, type OverlayNetwork } from "../../pkg/kube/index.js";
import { useKubeApiServer } from "../harness/kube.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

function onet(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: "weft.dev/v1alpha1", kind: "OverlayNetwork", metadata: { name }, spec });
}

const VALID = { cidr: "10.50.0.0/16", vni: 50, nodePrefixLength: 24 };

describe("deploy/ on a real kube-apiserver", function () {
  this.timeout(120_000);
  const kube = useKubeApiServer();

  before(async () => {
    const res = await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
    assert.match(res.stdout, /customresourcedefinition.apiextensions.k8s.io\/overlaynetworks.weft.dev serverside-applied/);
    await kube.api.kubectl(["wait", "--for=condition=Established", "crd/overlaynetworks.weft.dev", "--timeout=60s"]);
  });

  it("applies every object of kubectl apply -k deploy/ server-side", async () => {
    const built = YAML.parseAllDocuments((await kube.api.kubectl(["kustomize", "deploy/"])).stdout).map((d) => d.toJSON() as { kind: string; metadata: { name: string; namespace?: string } });
    assert.ok(built.length >= 9, `expected the whole install, got ${built.length} objects`);
    for (const obj of built) {
      const ns = obj.metadata.namespace ? ["-n", obj.metadata.namespace] : [];
      const got = await kube.api.kubectl([...ns, "get", obj.kind.toLowerCase(), obj.metadata.name, "-o", "name"]);
      assert.ok(got.stdout.trim().endsWith(`/${obj.metadata.name}`), `${obj.kind} ${obj.metadata.name} not stored`);
      if (obj.kind !== "Namespace" && obj.kind !== "CustomResourceDefinition" && !obj.kind.startsWith("Cluster")) assert.equal(obj.metadata.namespace, "weft-system", `${obj.kind} ${obj.metadata.name}`);
    }
    // Applying again is a no-op, not a conflict.
    await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/"]);
  });

  it("accepts the optional etcd component and the Secrets hack/gen-certs.sh writes", async () => {
    await kube.api.kubectl(["apply", "--server-side", "-k", "deploy/etcd"]);
    await kube.api.kubectl(["-n", "weft-system", "get", "statefulset/weft-etcd", "service/weft-etcd"]);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "weft-gencerts-"));
    try {
      await execa("bash", [path.join(ROOT, "hack/gen-certs.sh"), "--out", out, "--nodes", "node/n1 node/n2.example", "--etcd-endpoints", "https://10.0.0.20:22379", "--etcd-ip", "10.0.0.20", "--controller-ip", "10.0.0.10"]);
      await kube.api.kubectl(["apply", "--server-side", "-f", path.join(out, "secrets.yaml")]);
      // No node key in any Secret: agents get the CA bundle only (their identity is a ServiceAccount token).
      const ca = JSON.parse((await kube.api.kubectl(["-n", "weft-system", "get", "configmap", "weft-ca", "-o", "json"])).stdout) as { data: Record<string, string> };
      assert.deepEqual(Object.keys(ca.data), ["ca.crt"]);
      assert.equal(ca.data["ca.crt"].trim(), fs.readFileSync(path.join(out, "ca.crt"), "utf8").trim());
      const applied = fs.readFileSync(path.join(out, "secrets.yaml"), "utf8");
      assert.doesNotMatch(applied, /n1\.key|n2\.example\.key|weft-agent-tls/);
      // What the controller Deployment and the etcd StatefulSet mount.
      const keys = async (name: string) => Object.keys((JSON.parse((await kube.api.kubectl(["-n", "weft-system", "get", "secret", name, "-o", "json"])).stdout) as { data: Record<string, string> }).data).sort();
      assert.deepEqual(await keys("weft-etcd"), ["ca.crt", "endpoints", "tls.crt", "tls.key"]);
      assert.deepEqual(await keys("weft-etcd-server"), ["ca.crt", "tls.crt", "tls.key"]);
      // --nodes still issues per-node certificates as files, for standalone mTLS (the controller checks the CN).
      const subject = (await execa("openssl", ["x509", "-noout", "-subject", "-in", path.join(out, "n2.example.crt")])).stdout;
      assert.match(subject, /CN ?= ?n2\.example/);
      const verify = await execa("openssl", ["verify", "-CAfile", path.join(out, "ca.crt"), path.join(out, "weft-controller.crt")], { reject: false });
      assert.equal(verify.exitCode, 0, verify.stderr);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it("applies the schema's defaults, and the example converts to a NetworkSpec", async () => {
    await kube.api.kubectl(["apply", "-f", "deploy/examples/overlaynetwork.yaml"]);
    await kube.api.kubectl(["create", "-f", "-"], { input: onet("defaults", VALID) });
    const obj = JSON.parse((await kube.api.kubectl(["get", "onet", "defaults", "-o", "json"])).stdout) as OverlayNetwork;
    assert.deepEqual(obj.spec, { ...VALID, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, default: false, flood: false, dns: false });
    assert.deepEqual(overlayNetworkToSpec(obj), { name: "defaults", ...VALID, mode: "routed", mtu: 0, port: 4789, natOutgoing: true, isolated: true, nodeSelector: {}, default: false, flood: false, dns: false });
    const example = JSON.parse((await kube.api.kubectl(["get", "overlaynetwork", "pods", "-o", "json"])).stdout) as OverlayNetwork;
    assert.equal(overlayNetworkToSpec(example).default, true);
    const table = (await kube.api.kubectl(["get", "onet"])).stdout;
    assert.match(table.split("\n")[0], /^NAME\s+CIDR\s+VNI\s+MODE\s+NODES\s+READY\s+AGE$/);
    assert.match(table, /^pods\s+10\.244\.0\.0\/16\s+42\s+routed\s/m);
  });

  const invalid: Array<{ what: string; name?: string; spec: Record<string, unknown>; field: string; message: RegExp }> = [
    { what: "cidr missing", spec: { vni: 1, nodePrefixLength: 24 }, field: "spec.cidr", message: /Required value/ },
    { what: "vni missing", spec: { cidr: "10.1.0.0/16", nodePrefixLength: 24 }, field: "spec.vni", message: /Required value/ },
    { what: "nodePrefixLength missing", spec: { cidr: "10.1.0.0/16", vni: 1 }, field: "spec.nodePrefixLength", message: /Required value/ },
    { what: "cidr not a CIDR", spec: { ...VALID, cidr: "10.1.0.0" }, field: "spec.cidr", message: /IPv4 CIDR/ },
    { what: "cidr IPv6", spec: { ...VALID, cidr: "fd00::/64" }, field: "spec.cidr", message: /IPv4 CIDR/ },
    { what: "cidr with host bits", spec: { ...VALID, cidr: "10.1.2.3/16" }, field: "spec.cidr", message: /host bits/ },
    { what: "vni 0", spec: { ...VALID, vni: 0 }, field: "spec.vni", message: /greater than or equal to 1/ },
    { what: "vni above 2^24-1", spec: { ...VALID, vni: 16777216 }, field: "spec.vni", message: /less than or equal to 16777215/ },
    { what: "nodePrefixLength not longer than the cidr's", spec: { ...VALID, cidr: "10.1.0.0/24", nodePrefixLength: 24 }, field: "spec.nodePrefixLength", message: /longer than the prefix length of cidr/ },
    { what: "nodePrefixLength above 30", spec: { ...VALID, nodePrefixLength: 31 }, field: "spec.nodePrefixLength", message: /less than or equal to 30/ },
    { what: "mode unknown", spec: { ...VALID, mode: "bridged" }, field: "spec.mode", message: /Unsupported value: "bridged"/ },
    { what: "port 0", spec: { ...VALID, port: 0 }, field: "spec.port", message: /greater than or equal to 1/ },
    { what: "port above 65535", spec: { ...VALID, port: 70000 }, field: "spec.port", message: /less than or equal to 65535/ },
    { what: "mtu too small", spec: { ...VALID, mtu: 100 }, field: "spec.mtu", message: /0 \(automatic\) or at least 576/ },
    { what: "mtu above 9000", spec: { ...VALID, mtu: 9001 }, field: "spec.mtu", message: /less than or equal to 9000/ },
    { what: "natOutgoing not a boolean", spec: { ...VALID, natOutgoing: "yes" }, field: "spec.natOutgoing", message: /must be of type boolean/ },
    { what: "nodeSelector value not a string", spec: { ...VALID, nodeSelector: { zone: 1 } }, field: "spec.nodeSelector.zone", message: /must be of type string/ },
    { what: "unknown field", spec: { ...VALID, vnid: 5 }, field: "spec.vnid", message: /unknown field/ },
    { what: "name not a DNS label", name: "net.work", spec: VALID, field: "metadata.name", message: /DNS label/ },
  ];
  for (const c of invalid) {
    it(`rejects an OverlayNetwork with ${c.what}, naming ${c.field}`, async () => {
      const name = c.name ?? `bad-${c.what.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}`.replace(/-$/, "");
      const res = await kube.api.kubectl(["create", "-f", "-"], { input: onet(name, c.spec), reject: false });
      assert.notEqual(res.exitCode, 0, `accepted: ${res.stdout}`);
      assert.ok(res.stderr.includes(c.field), `error does not name ${c.field}: ${res.stderr}`);
      assert.match(res.stderr, c.message);
      const left = await kube.api.kubectl(["get", "onet", name, "--ignore-not-found", "-o", "name"]);
      assert.equal(left.stdout.trim(), "");
    });
  }

  describe("immutable fields", () => {
    before(async () => {
      await kube.api.kubectl(["create", "-f", "-"], { input: onet("immutable", { cidr: "10.60.0.0/16", vni: 60, nodePrefixLength: 24 }) });
    });
    for (const [field, value] of [["cidr", "10.61.0.0/16"], ["vni", 61], ["nodePrefixLength", 25], ["mode", "switched"]] as const) {
      it(`rejects a change of ${field}`, async () => {
        const res = await kube.api.kubectl(["patch", "onet", "immutable", "--type=merge", "-p", JSON.stringify({ spec: { [field]: value } })], { reject: false });
        assert.notEqual(res.exitCode, 0, `accepted: ${res.stdout}`);
        assert.ok(res.stderr.includes(`spec.${field}`), res.stderr);
        assert.match(res.stderr, new RegExp(`${field} is immutable`));
      });
    }
    it("accepts a change of a mutable field and bumps the generation", async () => {
      const before = JSON.parse((await kube.api.kubectl(["get", "onet", "immutable", "-o", "json"])).stdout) as OverlayNetwork;
      await kube.api.kubectl(["patch", "onet", "immutable", "--type=merge", "-p", JSON.stringify({ spec: { mtu: 1400, nodeSelector: { "weft.dev/pool": "a" } } })]);
      const after = JSON.parse((await kube.api.kubectl(["get", "onet", "immutable", "-o", "json"])).stdout) as OverlayNetwork;
      assert.equal(after.spec.mtu, 1400);
      assert.equal(after.spec.cidr, "10.60.0.0/16");
      assert.equal(after.metadata.generation, (before.metadata.generation ?? 0) + 1);
    });
  });
});
