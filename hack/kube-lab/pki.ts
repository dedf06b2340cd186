// The kube-lab control plane's PKI and credentials, made with openssl the way
// kubeadm lays them out: one CA, the API server's serving certificate (the
// underlay address and the `kubernetes` Service's ClusterIP), its client
// certificate for kubelets, the ServiceAccount signing key pair, and a static
// token per component (system:node:<name> for each kubelet, so the Node
// authorizer and NodeRestriction apply exactly as on a real cluster).
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export interface Credential {
  user: string;
  groups: string[];
  token: string;
}

export class LabPki {
  constructor(readonly dir: string) {}

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** CA, API server serving and kubelet-client certificates, ServiceAccount keys. */
  write(apiserverIps: string[]): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: this.dir, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    ssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7", "-subj", "/CN=weft-kube-lab-ca");
    const sans = [
      ...apiserverIps.map((ip) => `IP:${ip}`),
      "IP:127.0.0.1",
      ...["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"].map((d) => `DNS:${d}`),
    ];
    const issue = (name: string, subj: string, ext: string) => {
      fs.writeFileSync(this.file(`${name}.ext`), ext);
      ssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subj);
      ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "7", "-extfile", `${name}.ext`);
    };
    issue("apiserver", "/CN=kube-apiserver", `subjectAltName=${sans.join(",")}\nextendedKeyUsage=serverAuth\n`);
    issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth\n");
    const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    fs.writeFileSync(this.file("sa.key"), privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    fs.writeFileSync(this.file("sa.pub"), publicKey.export({ type: "spki", format: "pem" }));
  }

  /** The API server's --token-auth-file. */
  writeTokens(creds: Credential[]): void {
    const csv = creds.map((c) => `${c.token},${c.user},${c.user}${c.groups.length ? `,"${c.groups.join(",")}"` : ""}`).join("\n");
    fs.writeFileSync(this.file("tokens.csv"), `${csv}\n`, { mode: 0o600 });
  }

  kubeconfig(name: string, server: string, cred: Credential): string {
    const file = this.file(`${name}.kubeconfig`);
    fs.writeFileSync(
      file,
      [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: weft-kube-lab",
        "  cluster:",
        `    server: ${server}`,
        `    certificate-authority: ${this.file("ca.crt")}`,
        "users:",
        `- name: ${cred.user}`,
        "  user:",
        `    token: ${cred.token}`,
        "contexts:",
        "- name: weft-kube-lab",
        "  context:",
        "    cluster: weft-kube-lab",
        `    user: ${cred.user}`,
        "current-context: weft-kube-lab",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    return file;
  }
}

export function credential(user: string, groups: string[] = []): Credential {
  return { user, groups, token: crypto.randomBytes(24).toString("hex") };
}
