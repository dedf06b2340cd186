// How the agent learns about its uplink: the kernel's answer (kernel.ts)
// unless a test injects one. Its own file so agent.ts and kernel.ts need not
// import each other.
export interface HostProbe {
  defaultUplink(netns?: string): Promise<string>;
  interfaceInfo(name: string, netns?: string): Promise<{ mtu: number; ipv4?: string; mac: string }>;
}
