import { pino, type Logger } from "pino";

export type { Logger };

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/**
 * Structured JSON logs on stderr (stdout stays free for command output such as
 * `weftctl ... -o json`). Every line carries the component name.
 */
export function newLogger(component: string, level: string = process.env.WEFT_LOG_LEVEL ?? "info"): Logger {
  return pino({ name: component, level, base: { component, pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything: for unit tests and benchmarks. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
