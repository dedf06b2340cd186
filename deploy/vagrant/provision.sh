#!/usr/bin/env bash
# Provisions one Weft VM (run as root by `vagrant up` / `vagrant provision`):
#   - Node.js 20 (NodeSource's apt repository: Debian 12 ships Node 18), iproute2, iptables,
#     the CNI plugins (Debian containernetworking-plugins, in /usr/lib/cni), jq
#   - Weft built from the synced repository (/opt/weft-src) into /opt/weft, its commands
#     linked into /usr/local/bin, and weft-pod (deploy/vagrant/weft-pod.sh)
#   - the systemd units and /etc/default/weft-* from deploy/systemd/
#   - control VM only: etcd (Debian etcd-server with deploy/systemd/etcd.service.d/weft.conf),
#     the controller, and the default network created with weftctl
#   - every VM: the agent, its uplink the interface holding WEFT_NODE_IP (the private network)
# Idempotent: running it again (`vagrant provision`) rebuilds and restarts.
# Environment (set by the Vagrantfile): WEFT_NODE_IP, WEFT_CONTROL_IP, WEFT_ROLE=control|node,
# optionally WEFT_CIDR, WEFT_VNI, WEFT_NODE_PREFIX_LENGTH for the default network.
set -euo pipefail
: "${WEFT_NODE_IP:?}" "${WEFT_CONTROL_IP:?}" "${WEFT_ROLE:?}"
WEFT_CIDR=${WEFT_CIDR:-10.244.0.0/16}
WEFT_VNI=${WEFT_VNI:-42}
WEFT_NODE_PREFIX_LENGTH=${WEFT_NODE_PREFIX_LENGTH:-24}
SRC=/opt/weft-src
DEST=/opt/weft
export DEBIAN_FRONTEND=noninteractive
log() { echo "weft-provision[$(hostname)]: $*"; }

log "packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg iproute2 iptables \
  containernetworking-plugins jq iputils-ping tcpdump rsync >/dev/null
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  log "Node.js 20 from NodeSource"
  curl -fsSL https://deb.nodesource.com/setup_20.x | bash - >/dev/null
  apt-get install -y -qq nodejs >/dev/null
fi

log "building Weft in $DEST"
rsync -a --delete --exclude node_modules --exclude dist --exclude .lab "$SRC/" "$DEST/"
cd "$DEST"
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/tsc -p tsconfig.build.json
for b in weft-controller weft-agent weftctl; do
  chmod +x "dist/cmd/$b/main.js"
  ln -sf "$DEST/dist/cmd/$b/main.js" "/usr/local/bin/$b"
done
install -m 0755 deploy/vagrant/weft-pod.sh /usr/local/bin/weft-pod
mkdir -p /etc/cni/net.d /var/lib/weft
# Debian installs the CNI plugins in /usr/lib/cni; container runtimes look in /opt/cni/bin.
mkdir -p /opt/cni/bin && for p in /usr/lib/cni/*; do ln -sf "$p" /opt/cni/bin/; done
# Weft's own plugin, chained in every conflist the agent writes (it reports each pod's
# interface to the agent's socket in /var/lib/weft).
chmod +x dist/cmd/weft-cni/main.js && ln -sf "$DEST/dist/cmd/weft-cni/main.js" /opt/cni/bin/weft

# The uplink: the interface holding the private address (eth1 on debian/bookworm64), never
# the NAT interface eth0, whose address is the same on every VM.
UPLINK=$(ip -o -4 addr show | awk -v ip="$WEFT_NODE_IP" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')
UPLINK=${UPLINK:-eth1}
log "uplink $UPLINK, underlay IP $WEFT_NODE_IP"

install -m 0644 deploy/systemd/weft-agent.service /etc/systemd/system/weft-agent.service
install -m 0644 deploy/systemd/weft-controller.service /etc/systemd/system/weft-controller.service
sed -e "s/^WEFT_CONTROLLER=.*/WEFT_CONTROLLER=${WEFT_CONTROL_IP}:9400/" \
    -e "s/^#\{0,1\}WEFT_UPLINK=.*/WEFT_UPLINK=${UPLINK}/" \
    -e "s/^#\{0,1\}WEFT_UNDERLAY_IP=.*/WEFT_UNDERLAY_IP=${WEFT_NODE_IP}/" \
    deploy/systemd/weft-agent.env > /etc/default/weft-agent
systemctl daemon-reload

if [ "$WEFT_ROLE" = control ]; then
  log "etcd on ${WEFT_NODE_IP}:2379"
  apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
  mkdir -p /etc/systemd/system/etcd.service.d
  sed "s/ADDRESS/${WEFT_NODE_IP}/g" deploy/systemd/etcd.service.d/weft.conf > /etc/systemd/system/etcd.service.d/weft.conf
  sed "s#^WEFT_ETCD_ENDPOINTS=.*#WEFT_ETCD_ENDPOINTS=http://${WEFT_NODE_IP}:2379#" \
    deploy/systemd/weft-controller.env > /etc/default/weft-controller
  systemctl daemon-reload
  systemctl enable etcd >/dev/null 2>&1
  systemctl restart etcd
  log "controller"
  systemctl enable weft-controller >/dev/null 2>&1
  systemctl restart weft-controller
  log "default network ${WEFT_CIDR}, VNI ${WEFT_VNI}, a /${WEFT_NODE_PREFIX_LENGTH} per node"
  # `apply` creates or leaves unchanged, so provisioning again is safe; etcd may still be settling.
  for i in $(seq 1 15); do
    if printf 'name: default\ncidr: %s\nvni: %s\nnodePrefixLength: %s\ndefault: true\n' \
        "$WEFT_CIDR" "$WEFT_VNI" "$WEFT_NODE_PREFIX_LENGTH" |
        weftctl --etcd-endpoints "http://${WEFT_NODE_IP}:2379" network apply -f -; then
      break
    fi
    [ "$i" = 15 ] && { log "could not create the default network"; exit 1; }
    sleep 2
  done
fi

log "agent"
systemctl enable weft-agent >/dev/null 2>&1
systemctl restart weft-agent
log "provisioned as ${WEFT_ROLE} (${WEFT_NODE_IP}); see docs/vagrant.md"
