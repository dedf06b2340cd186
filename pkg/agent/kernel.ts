// The real, kernel-programming dataplane. Loaded lazily by the agent so unit
// tests with an injected dataplane never touch the kernel, and so start-up
// does not wait for modules the Join does not need.
import { Dataplane, type DataplaneOptions, type DataplanePort } from "../dataplane/index.js";
import type { HostProbe } from "./host.js";

export function createKernelDataplane(opts: DataplaneOptions): DataplanePort {
  return new Dataplane(opts);
}

export const kernelHost: HostProbe = {
  defaultUplink: (netns) => Dataplane.defaultUplink(netns),
  interfaceInfo: (name, netns) => Dataplane.interfaceInfo(name, netns),
};
