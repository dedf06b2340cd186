// tcpdump in a test's namespace, started so that nothing sent afterwards is missed.
import { execa } from "execa";

export interface Capture {
  /** What tcpdump printed, once it has exited (by -c, or its time limit). */
  output(): Promise<string>;
  /** Stops it now (SIGINT) and gives what it printed. */
  stop(): Promise<string>;
}

/**
 * Runs `tcpdump -l -n <args>` in `netns` for at most `seconds`, and resolves
 * once it says "listening on" (attached: packets sent from now on are
 * captured). Rejects if it exits before that.
 */
export async function startTcpdump(netns: string, seconds: number, args: string[]): Promise<Capture> {
  const proc = execa("ip", ["netns", "exec", netns, "timeout", String(seconds), "tcpdump", "-l", "-n", ...args], { reject: false });
  await new Promise<void>((resolve, reject) => {
    let err = "";
    proc.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      if (err.includes("listening on")) resolve();
    });
    proc.once("exit", () => reject(new Error(`tcpdump exited early: ${err}`)));
  });
  const output = async () => String((await proc).stdout);
  return {
    output,
    stop() {
      proc.kill("SIGINT");
      return output();
    },
  };
}
