// The etcd connection flags weft-controller and weftctl share, and what they
// become: endpoints, key prefix and client TLS.
import { envOption, parseList, type Option } from "../cli/index.js";
import { DEFAULT_PREFIX } from "./keys.js";
import { loadEtcdTls, type EtcdTls } from "./tls.js";

export interface EtcdFlags {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
}

export function etcdFlagOptions(): Option[] {
  return [
    envOption("--etcd-endpoints <urls>", "etcd client URLs, comma-separated", ["http://127.0.0.1:2379"], "http://127.0.0.1:2379").argParser(parseList),
    envOption("--etcd-prefix <prefix>", "key prefix in etcd", DEFAULT_PREFIX),
    envOption("--etcd-ca <file>", "CA that signed etcd's certificate (PEM), for https:// endpoints"),
    envOption("--etcd-cert <file>", "client certificate for etcd (PEM), when etcd requires one (--client-cert-auth)"),
    envOption("--etcd-key <file>", "private key of --etcd-cert (PEM)"),
  ];
}

/** Reads the TLS files; errors name the flag. */
export function etcdConnection(f: EtcdFlags): { endpoints: string[]; prefix: string; tls?: EtcdTls } {
  return { endpoints: f.etcdEndpoints, prefix: f.etcdPrefix, tls: loadEtcdTls({ ca: f.etcdCa, cert: f.etcdCert, key: f.etcdKey }, f.etcdEndpoints) };
}
