#!/usr/bin/env bash
# Generates the Secrets Weft's Kubernetes manifests (deploy/) mount:
#   weft-etcd            endpoints ca.crt tls.crt tls.key   etcd client URLs and the
#                        controller's etcd client certificate (etcd with mTLS)
#   weft-etcd-server     ca.crt tls.crt tls.key   serving certificate of the optional
#                        deploy/etcd (only when Weft makes the etcd PKI, see below)
#   weft-controller-tls  tls.crt tls.key ca.crt   the controller's gRPC serving certificate
#   weft-ca (ConfigMap)  ca.crt                   the CA bundle agents trust the controller by
# No node key is in any of them: on Kubernetes, agents prove their node with
# their pod's projected ServiceAccount token, which the controller checks with
# TokenReview (the token's bound node must be the node joining). A node added
# later joins without anything being regenerated.
# --nodes (standalone / VMs, deploy/systemd): also issue one client
# certificate per node (CN = node name) as files <node>.crt/<node>.key in --out,
# for the controller's mTLS mode; they are never put into secrets.yaml.
#
# etcd is always reached over https with a client certificate. For your own
# etcd, pass its CA and a client certificate it accepts (--etcd-ca, --etcd-cert,
# --etcd-key). Without them, a separate etcd CA is made here (agents' certificates
# must not open etcd), with a client certificate for the controller and a serving
# certificate for deploy/etcd (names weft-etcd.<namespace>.svc, 127.0.0.1 and
# each --etcd-ip).
#
# Usage:
#   hack/gen-certs.sh --etcd-endpoints https://10.0.0.5:2379 \
#     [--etcd-ca ca.pem --etcd-cert client.pem --etcd-key client-key.pem | --etcd-ip IP ...] \
#     [--controller-ip "$(kubectl -n weft-system get svc weft-controller -o jsonpath='{.spec.clusterIP}')"] \
#     [--nodes "n1 n2"] [--out weft-certs] [--days 365] [--namespace weft-system]
#   kubectl apply -f weft-certs/secrets.yaml
# The agents dial the controller Service's ClusterIP, so that IP must be in the
# controller's certificate: apply deploy/ first (the Service gets its IP), then
# run this with --controller-ip.
set -euo pipefail

out=weft-certs
nodes=""
etcd=""
controller_ips=""
etcd_ips=""
etcd_ca=""
etcd_cert=""
etcd_key=""
days=365
namespace=weft-system
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --etcd-endpoints) etcd="$2"; shift 2 ;;
    --controller-ip) controller_ips="$controller_ips ${2//,/ }"; shift 2 ;;
    --etcd-ip) etcd_ips="$etcd_ips ${2//,/ }"; shift 2 ;;
    --etcd-ca) etcd_ca=$(realpath "$2"); shift 2 ;;
    --etcd-cert) etcd_cert=$(realpath "$2"); shift 2 ;;
    --etcd-key) etcd_key=$(realpath "$2"); shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "gen-certs: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ -n "$etcd" ] || { echo "gen-certs: --etcd-endpoints is required (e.g. https://10.0.0.5:2379)" >&2; exit 2; }
for e in ${etcd//,/ }; do
  [[ "$e" == https://* ]] || { echo "gen-certs: --etcd-endpoints: \"$e\" is not https:// (the controller talks to etcd with mTLS)" >&2; exit 2; }
done
external=0
if [ -n "$etcd_ca$etcd_cert$etcd_key" ]; then
  [ -n "$etcd_ca" ] && [ -n "$etcd_cert" ] && [ -n "$etcd_key" ] || { echo "gen-certs: --etcd-ca, --etcd-cert and --etcd-key go together" >&2; exit 2; }
  for f in "$etcd_ca" "$etcd_cert" "$etcd_key"; do [ -r "$f" ] || { echo "gen-certs: cannot read $f" >&2; exit 2; }; done
  [ -z "$etcd_ips" ] || { echo "gen-certs: --etcd-ip is for the etcd this script makes certificates for; not with --etcd-ca" >&2; exit 2; }
  external=1
fi
# Accept "node/a node/b", "a,b" or one per line (kubectl get nodes -o name).
node_list=$(echo "$nodes" | tr ', ' '\n\n' | sed 's#^node/##' | grep -v '^$' | sort -u || true)
for n in $node_list; do
  [[ "$n" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || { echo "gen-certs: \"$n\" is not a valid node name" >&2; exit 2; }
done
[[ "$days" =~ ^[0-9]+$ ]] || { echo "gen-certs: --days must be a number" >&2; exit 2; }

mkdir -p "$out"
cd "$out"
umask 077
ssl() { openssl "$@" 2>/dev/null; }
key() { ssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1"; }

if [ ! -f ca.crt ] || [ ! -f ca.key ]; then
  key ca.key
  ssl req -x509 -new -key ca.key -out ca.crt -days "$days" -subj "/CN=weft-ca"
  echo "gen-certs: new CA in $out/ca.crt" >&2
fi

# issue NAME EXTFILE-CONTENT [CA-NAME]
issue() {
  local ca="${3:-ca}"
  key "$1.key"
  ssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf '%b' "$2" > "$1.ext"
  ssl x509 -req -in "$1.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$1.crt" -days "$days" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}

sans="DNS:weft-controller,DNS:weft-controller.$namespace,DNS:weft-controller.$namespace.svc,DNS:weft-controller.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
for ip in $controller_ips; do sans="$sans,IP:$ip"; done
issue weft-controller "subjectAltName=$sans\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
for n in $node_list; do
  [ -f "$n.crt" ] && openssl verify -CAfile ca.crt "$n.crt" >/dev/null 2>&1 && continue
  issue "$n" "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n"
done

if ((external)); then
  cp "$etcd_ca" etcd-ca.crt; cp "$etcd_cert" etcd-client.crt; cp "$etcd_key" etcd-client.key
else
  if [ ! -f etcd-ca.crt ] || [ ! -f etcd-ca.key ]; then
    key etcd-ca.key
    ssl req -x509 -new -key etcd-ca.key -out etcd-ca.crt -days "$days" -subj "/CN=weft-etcd-ca"
  fi
  esans="DNS:weft-etcd,DNS:weft-etcd.$namespace,DNS:weft-etcd.$namespace.svc,DNS:weft-etcd.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
  for ip in $etcd_ips; do esans="$esans,IP:$ip"; done
  issue etcd-server "subjectAltName=$esans\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n" etcd-ca
  issue etcd-client "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n" etcd-ca
fi
b64() { base64 -w0 < "$1"; }
# tls_secret SECRET-NAME CERT-BASENAME CA-BASENAME: a kubernetes.io/tls Secret with ca.crt.
tls_secret() {
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $namespace
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$2.crt")
  tls.key: $(b64 "$2.key")
  ca.crt: $(b64 "$3.crt")
YAML
}
{
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: weft-etcd
  namespace: $namespace
type: Opaque
stringData:
  endpoints: "$etcd"
data:
  ca.crt: $(b64 etcd-ca.crt)
  tls.crt: $(b64 etcd-client.crt)
  tls.key: $(b64 etcd-client.key)
YAML
  tls_secret weft-controller-tls weft-controller ca
  cat <<YAML
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: weft-ca
  namespace: $namespace
data:
  ca.crt: |
$(sed 's/^/    /' ca.crt)
YAML
  ((external)) || tls_secret weft-etcd-server etcd-server etcd-ca
} > secrets.yaml
echo "gen-certs: wrote $out/secrets.yaml (etcd, controller, CA bundle; no node keys)${node_list:+ and $(echo "$node_list" | wc -l) node certificate file(s) for standalone mTLS}; apply with: kubectl apply -f $out/secrets.yaml" >&2
