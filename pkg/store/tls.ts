// etcd client TLS: a CA to verify etcd's certificate and, for etcds that
// require client certificates (--client-cert-auth), a certificate and key.
import fs from "node:fs";

export interface EtcdTls {
  /** PEM CA bundle that signed etcd's serving certificate; without it, the system's roots. */
  ca?: Buffer;
  /** PEM client certificate and private key; both or neither. */
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdTlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

/**
 * Reads the files behind --etcd-ca, --etcd-cert and --etcd-key. Undefined when
 * none is given (plain http endpoints). Errors name the flag.
 */
export function loadEtcdTls(files: EtcdTlsFiles, endpoints: string[]): EtcdTls | undefined {
  if (!files.ca && !files.cert && !files.key) return undefined;
  if (!!files.cert !== !!files.key) throw new Error("--etcd-cert and --etcd-key go together");
  const plain = endpoints.filter((e) => !e.startsWith("https://"));
  if (plain.length > 0) throw new Error(`--etcd-endpoints: TLS flags are set, so every endpoint must be https:// (not ${plain.join(", ")})`);
  const read = (flag: string, file?: string) => {
    if (!file) return undefined;
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new Error(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return { ca: read("--etcd-ca", files.ca), cert: read("--etcd-cert", files.cert), key: read("--etcd-key", files.key) };
}
