/** Reported to the controller in JoinRequest.agent_version. */
export const AGENT_VERSION = "0.1.0";
