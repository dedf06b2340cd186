// Validation of what an agent sends on Join. Pure.
import type { JoinRequest } from "../api/index.js";
import { isIPv4, normalizeMac, parseCidr } from "../ip/index.js";

/** RFC 1123 subdomain, as Kubernetes node names are. */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NETWORK_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function isValidNodeName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && NODE_NAME.test(name);
}

/** The problems with a JoinRequest, each naming the field; empty when it is fine. */
export function joinRequestProblems(req: JoinRequest): string[] {
  const problems: string[] = [];
  if (!isValidNodeName(req.nodeName)) problems.push(`node_name: "${req.nodeName}" is not a valid node name (lower-case RFC 1123 subdomain, at most 253 characters)`);
  if (!isIPv4(req.underlayIp)) problems.push(`underlay_ip: "${req.underlayIp}" is not an IPv4 address`);
  for (const [net, mac] of Object.entries(req.vtepMacs)) {
    if (!NETWORK_NAME.test(net)) problems.push(`vtep_macs: "${net}" is not a network name`);
    if (!normalizeMac(mac)) problems.push(`vtep_macs[${net}]: "${mac}" is not a unicast MAC address`);
  }
  for (const [net, subnet] of Object.entries(req.previousSubnets)) {
    if (!NETWORK_NAME.test(net)) problems.push(`previous_subnets: "${net}" is not a network name`);
    try {
      parseCidr(subnet);
    } catch (err) {
      problems.push(`previous_subnets[${net}]: ${(err as Error).message}`);
    }
  }
  for (const [k, v] of Object.entries(req.labels)) {
    if (k.length === 0 || k.length > 317) problems.push(`labels: key "${k}" is not a label key`);
    if (v.length > 63) problems.push(`labels[${k}]: value is longer than 63 characters`);
  }
  if (req.uplinkMtu !== 0 && (req.uplinkMtu < 576 || req.uplinkMtu > 65535)) problems.push(`uplink_mtu: ${req.uplinkMtu} is outside 576..65535`);
  if (req.agentVersion.length > 128) problems.push("agent_version: longer than 128 characters");
  return problems;
}
