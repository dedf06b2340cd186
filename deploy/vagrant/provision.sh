#!/usr/bin/env bash
# Provisions one Weft VM: Node.js 20, the kernel tools and CNI plugins, Weft
# built from the synced repo, systemd units; on the control VM also etcd, the
# controller and the default network. Idempotent: `vagrant provision` again is safe.
set -euo pipefail
: "${WEFT_NODE_IP:?}" "${WEFT_CONTROL_IP:?}" "${WEFT_ROLE:?}"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg iproute2 iptables \
  containernetworking-plugins iputils-ping tcpdump rsync >/dev/null
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  # Debian 12 ships Node 18; NodeSource provides 20.
  curl -fsSL https://deb.nodesource.com/setup_20.x | bash - >/dev/null
  apt-get install -y -qq nodejs >/dev/null
fi

# Build from the synced source into /opt/weft.
rsync -a --delete --exclude node_modules --exclude dist /opt/weft-src/ /opt/weft/
cd /opt/weft
npm ci --no-audit --no-fund --loglevel=error
node_modules/.bin/tsc -p tsconfig.build.json
for b in weft-controller weft-agent weftctl; do
  chmod +x "dist/cmd/$b/main.js"
  ln -sf "/opt/weft/dist/cmd/$b/main.js" "/usr/local/bin/$b"
done
mkdir -p /etc/cni/net.d /var/lib/weft
# The CNI plugins: Debian installs them in /usr/lib/cni; runtimes look in /opt/cni/bin.
mkdir -p /opt/cni/bin && for p in /usr/lib/cni/*; do ln -sf "$p" /opt/cni/bin/; done

install -m 0644 deploy/systemd/weft-agent.service /etc/systemd/system/weft-agent.service
install -m 0644 deploy/systemd/weft-controller.service /etc/systemd/system/weft-controller.service
sed -e "s/^WEFT_CONTROLLER=.*/WEFT_CONTROLLER=${WEFT_CONTROL_IP}:9400/" \
    -e "s/^#WEFT_UPLINK=.*/WEFT_UPLINK=eth1/" \
    -e "s/^#WEFT_UNDERLAY_IP=.*/WEFT_UNDERLAY_IP=${WEFT_NODE_IP}/" \
    deploy/systemd/weft-agent.env > /etc/default/weft-agent

if [ "$WEFT_ROLE" = control ]; then
  apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
  mkdir -p /etc/systemd/system/etcd.service.d
  sed "s/ADDRESS/${WEFT_NODE_IP}/g" deploy/systemd/etcd.service.d/weft.conf > /etc/systemd/system/etcd.service.d/weft.conf
  sed "s#^WEFT_ETCD_ENDPOINTS=.*#WEFT_ETCD_ENDPOINTS=http://${WEFT_NODE_IP}:2379#" deploy/systemd/weft-controller.env > /etc/default/weft-controller
  systemctl daemon-reload
  systemctl restart etcd
  systemctl enable --now weft-controller
  # The default network; `apply` is idempotent.
  printf 'name: default\ncidr: 10.244.0.0/16\nvni: 42\nnodePrefixLength: 24\ndefault: true\n' |
    weftctl --etcd-endpoints "http://${WEFT_NODE_IP}:2379" network apply -f -
fi

systemctl daemon-reload
systemctl enable --now weft-agent
echo "weft: $(hostname) provisioned as ${WEFT_ROLE} (${WEFT_NODE_IP})"
