// The plugin↔agent contract and the plugin's reading of its config: pure logic.
import assert from "node:assert/strict";
import { decodeEndpoint, decodeRequest, sameEndpoint, type Endpoint } from "../../pkg/cni/endpoint.js";
import { CniCode, CniError, endpointFromResult, parseCniArgs, parseConfig } from "../../pkg/cni/plugin.js";

const good = { containerId: "c0ffee", netns: "/var/run/netns/pod1", ifName: "eth0", network: "pods", name: "default/web-1", aliases: ["web"], ips: ["10.244.1.5"], mac: "02:AA:bb:cc:dd:01" };

describe("cni endpoint contract", () => {
  it("decodes a good endpoint, normalising the MAC and deriving the id", () => {
    const ep = decodeEndpoint(good) as Endpoint;
    assert.equal(ep.id, "c0ffee/eth0");
    assert.equal(ep.mac, "02:aa:bb:cc:dd:01");
    assert.deepEqual(ep.aliases, ["web"]);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["bad MAC", { mac: "zz:zz" }, /endpoint\.mac: "zz:zz" is not a unicast MAC/],
    ["multicast MAC", { mac: "01:00:5e:00:00:01" }, /endpoint\.mac/],
    ["bad IP", { ips: ["10.0.0.300"] }, /endpoint\.ips\[0\]: "10\.0\.0\.300" is not an IPv4 address/],
    ["no IPs", { ips: [] }, /endpoint\.ips: must be a non-empty list/],
    ["IPs not a list", { ips: "10.0.0.1" }, /endpoint\.ips/],
    ["relative netns", { netns: "pod1" }, /endpoint\.netns: "pod1" is not an absolute path/],
    ["bad network", { network: "Pods!" }, /endpoint\.network/],
    ["bad alias", { aliases: ["ok", "no way"] }, /endpoint\.aliases\[1\]/],
    ["alias with slash", { aliases: ["a/b"] }, /endpoint\.aliases\[0\]/],
    ["too many aliases", { aliases: Array.from({ length: 33 }, (_, i) => `a${i}`) }, /endpoint\.aliases: at most 32/],
    ["bad name", { name: "has space" }, /endpoint\.name/],
    ["interface name too long", { ifName: "a".repeat(16) }, /endpoint\.ifName/],
    ["wrong id", { id: "other/eth0" }, /endpoint\.id/],
    ["container id missing", { containerId: undefined }, /endpoint\.containerId: must be a string/],
  ];
  for (const [what, patch, re] of bad) {
    it(`refuses ${what}, naming the field`, () => {
      const res = decodeEndpoint({ ...good, ...patch });
      assert.ok(Array.isArray(res), "expected problems");
      assert.match(res.join("; "), re);
    });
  }

  it("decodes requests and refuses unknown ops and non-JSON", () => {
    assert.deepEqual(decodeRequest(JSON.stringify({ op: "del", containerId: "c", ifName: "eth0", network: "pods" })), { op: "del", containerId: "c", ifName: "eth0", network: "pods" });
    assert.deepEqual(decodeRequest('{"op":"status"}'), { op: "status" });
    assert.match((decodeRequest('{"op":"nuke"}') as string[]).join(), /op: must be/);
    assert.match((decodeRequest("{not json") as string[]).join(), /request: not JSON/);
    assert.match((decodeRequest("[]") as string[]).join(), /request: must be an object/);
    assert.match((decodeRequest(JSON.stringify({ op: "add", endpoint: { ...good, mac: "x" } })) as string[]).join(), /endpoint\.mac/);
  });

  it("sameEndpoint notices every field that matters", () => {
    const a = decodeEndpoint(good) as Endpoint;
    assert.ok(sameEndpoint(a, { ...a }));
    for (const patch of [{ mac: "02:aa:bb:cc:dd:02" }, { ips: ["10.244.1.6"] }, { name: "x" }, { aliases: [] }, { netns: "/x" }, { network: "other" }]) {
      assert.ok(!sameEndpoint(a, { ...a, ...patch }), JSON.stringify(patch));
    }
  });
});

describe("cni plugin config", () => {
  const prevResult = {
    cniVersion: "1.0.0",
    interfaces: [{ name: "weftbr42", mac: "02:00:00:00:00:01" }, { name: "veth1", mac: "02:00:00:00:00:02" }, { name: "eth0", mac: "02:00:00:00:00:03", sandbox: "/var/run/netns/p" }],
    ips: [{ address: "10.244.1.7/24", gateway: "10.244.1.1", interface: 2 }],
  };
  const env = { containerId: "abc", netns: "/var/run/netns/p", ifName: "eth0" };

  it("takes the Kubernetes pod name from CNI_ARGS over args.weft.name", () => {
    const conf = parseConfig(JSON.stringify({ cniVersion: "1.0.0", network: "pods", args: { weft: { name: "lab", aliases: ["x"] } }, prevResult }), parseCniArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p1"));
    assert.equal(conf.name, "ns/p1");
    assert.deepEqual(conf.aliases, ["x"]);
    assert.equal(conf.socket, "/var/lib/weft/cni.sock");
    const ep = endpointFromResult(conf, env);
    assert.deepEqual([ep.ips, ep.mac, ep.name, ep.id], [["10.244.1.7"], "02:00:00:00:00:03", "ns/p1", "abc/eth0"]);
  });

  it("takes the network's resolver from dns (the agent writes it for networks with dns on)", () => {
    const dns = { nameservers: ["10.244.1.1"], search: ["pods.weft.internal", "weft.internal"] };
    assert.deepEqual(parseConfig(JSON.stringify({ cniVersion: "1.0.0", network: "pods", dns }), {}).dns, dns);
    assert.equal(parseConfig(JSON.stringify({ cniVersion: "1.0.0", network: "pods" }), {}).dns, undefined);
  });

  it("uses args.weft.name without Kubernetes", () => {
    assert.equal(parseConfig(JSON.stringify({ cniVersion: "0.4.0", network: "pods", args: { weft: { name: "db" } } }), {}).name, "db");
  });

  const refusals: [string, string, Record<string, string>, number, RegExp][] = [
    ["not JSON", "{", {}, CniCode.decode, /network config: not JSON/],
    ["unknown version", JSON.stringify({ cniVersion: "9.9.9", network: "pods" }), {}, CniCode.incompatibleVersion, /cniVersion/],
    ["no network", JSON.stringify({ cniVersion: "1.0.0" }), {}, CniCode.invalidConfig, /network: the Weft network name is required/],
    ["relative socket", JSON.stringify({ cniVersion: "1.0.0", network: "pods", socket: "x.sock" }), {}, CniCode.invalidConfig, /socket: must be an absolute path/],
    ["dns without nameservers", JSON.stringify({ cniVersion: "1.0.0", network: "pods", dns: { search: ["pods.weft.internal"] } }), {}, CniCode.invalidConfig, /dns\.nameservers: at least one/],
    ["dns nameserver not an address", JSON.stringify({ cniVersion: "1.0.0", network: "pods", dns: { nameservers: ["gw; rm"] } }), {}, CniCode.invalidConfig, /dns\.nameservers: must be a list of IP addresses/],
    ["dns search not names", JSON.stringify({ cniVersion: "1.0.0", network: "pods", dns: { nameservers: ["10.244.1.1"], search: [7] } }), {}, CniCode.invalidConfig, /dns\.search/],
    ["aliases not a list", JSON.stringify({ cniVersion: "1.0.0", network: "pods", args: { weft: { aliases: "a" } } }), {}, CniCode.invalidConfig, /args\.weft\.aliases/],
  ];
  for (const [what, stdin, args, code, re] of refusals) {
    it(`refuses ${what} with CNI code ${code}`, () => {
      assert.throws(() => parseConfig(stdin, args), (e: unknown) => e instanceof CniError && e.code === code && re.test(e.message));
    });
  }

  it("refuses malformed CNI_ARGS", () => {
    assert.throws(() => parseCniArgs("K8S_POD_NAME"), (e: unknown) => e instanceof CniError && e.code === CniCode.invalidEnv);
  });

  it("needs a prevResult with the sandbox interface", () => {
    const conf = parseConfig(JSON.stringify({ cniVersion: "1.0.0", network: "pods" }), {});
    assert.throws(() => endpointFromResult(conf, env), /prevResult: missing/);
    const other = parseConfig(JSON.stringify({ cniVersion: "1.0.0", network: "pods", prevResult: { ...prevResult, interfaces: prevResult.interfaces.slice(0, 2) } }), {});
    assert.throws(() => endpointFromResult(other, env), /no sandbox interface named eth0/);
  });
});
