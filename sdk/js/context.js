// What a tool knows about the attempt it runs in: the host's `run-context`, read-only.

export class Context {
  /**
   * Built by the SDK from the WIT record; construct one yourself to unit test a tool's logic.
   * @param {{runId: string, attempt: number, tool: string, deadlineMs: number|bigint}} ctx
   */
  constructor({ runId, attempt, tool, deadlineMs }) {
    this.runId = runId;
    this.attempt = attempt;
    this.tool = tool;
    // The WIT u64 arrives as a BigInt; epoch milliseconds fit a Number exactly for ~285k years.
    this.deadlineMs = Number(deadlineMs);
    Object.freeze(this);
  }

  /** Milliseconds left before the host interrupts this attempt; 0 once the deadline passed. */
  remainingMs() {
    return Math.max(0, this.deadlineMs - Date.now());
  }
}
