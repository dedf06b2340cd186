// The real, kernel-programming dataplane. Loaded lazily by the agent so unit
// tests with an injected dataplane never touch the kernel.
import { Dataplane, type DataplaneOptions } from "../dataplane/index.js";
import type { HostProbe } from "./agent.js";
import type { DataplanePort } from "./dataplane-port.js";

export function createKernelDataplane(opts: DataplaneOptions): DataplanePort {
  return new Dataplane(opts);
}

export const kernelHost: HostProbe = {
  defaultUplink: (netns) => Dataplane.defaultUplink(netns),
  interfaceInfo: (name, netns) => Dataplane.interfaceInfo(name, netns),
};
