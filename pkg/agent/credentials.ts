// How the agent proves who it is to the controller. Standalone: its own
// client certificate (mTLS). Kubernetes: TLS that trusts the controller's CA
// bundle, plus the pod's projected ServiceAccount token as a bearer token,
// read from its file on every dial, so the token kubelet rotates is always the
// one sent (a stream's token is checked when it opens).
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { TlsFiles } from "./agent.js";

export interface TokenAuth {
  /** The projected ServiceAccount token (kubelet refreshes it in place). */
  file: string;
  /** CA bundle that signed the controller's serving certificate. */
  ca: Buffer;
}

export function channelCredentials(tls?: TlsFiles, token?: TokenAuth): grpc.ChannelCredentials {
  if (token) {
    const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
      fs.readFile(token.file, "utf8", (err, text) => {
        if (err) return callback(new Error(`cannot read the ServiceAccount token ${token.file}: ${err.code ?? err.message}`));
        const md = new grpc.Metadata();
        md.set("authorization", `Bearer ${text.trim()}`);
        callback(null, md);
      });
    });
    return grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(token.ca), bearer);
  }
  return tls ? grpc.credentials.createSsl(tls.ca, tls.key, tls.cert) : grpc.credentials.createInsecure();
}
