// Enqueue a Worker job, follow its lifecycle events across a reconnect, and
// print its live output: what a TypeScript application of the suite does to
// hand work to Worker and watch it.
//
//   npm ci && npm run build
//   WORKER_CONTROLLER=127.0.0.1:7070 [WORKER_TOKEN=wkr_...] node dist/follow.js JOB [PAYLOAD_JSON]
//
// It prints one line per event (`event seq=12 run=01J... state=queued`), the
// job's output as it arrives (`output: ...`), then `result: succeeded` and
// exits 0 when the run succeeded, 1 when it ended otherwise, 2 on misuse or
// when the events broke their promise (a gap, a duplicate, out of order).

import * as path from "path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The repository's proto files (the same ones the controller is built from). */
const PROTO_ROOT = process.env.WORKER_PROTO_DIR ?? path.resolve(__dirname, "..", "..", "..", "proto");

const TERMINAL = new Set(["succeeded", "dead", "cancelled"]);

interface RunEvent {
  seq: string; // uint64 as a decimal string (longs: String)
  run_id: string;
  job: string;
  type: string;
  state: string;
  from_state: string;
  attempt: number;
  at: string;
}

interface OutputEvent {
  event?: "attempt_start" | "chunk" | "attempt_end" | "end";
  attempt_start?: { attempt: number; agent: string; live: boolean };
  chunk?: { attempt: number; data: Buffer; skipped: string };
  attempt_end?: { attempt: number; outcome: string; exit_code?: number; error: string };
  end?: { state: string; reason: string; attempt: number; exit_code?: number; error: string };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Client = any;

function connect(): { client: Client; metadata: grpc.Metadata } {
  const definition = protoLoader.loadSync("worker/v1/controller.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const worker = (grpc.loadPackageDefinition(definition) as any).worker.v1;
  const address = (process.env.WORKER_CONTROLLER ?? "127.0.0.1:7070").replace(/^http:\/\//, "");
  const client = new worker.ControllerService(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (process.env.WORKER_TOKEN) {
    metadata.set("authorization", `Bearer ${process.env.WORKER_TOKEN}`);
  }
  return { client, metadata };
}

function enqueue(client: Client, metadata: grpc.Metadata, job: string, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    client.Enqueue({ job, payload }, metadata, (err: grpc.ServiceError | null, response: { run?: { id: string } }) => {
      if (err) reject(err);
      else resolve(response.run!.id);
    });
  });
}

/**
 * Follows the events of run `runId`: reads from the oldest stored event of its
 * job, hangs up after the first event of the run (as a client that loses its
 * connection would), then resumes from the last sequence number it saw until
 * the run is terminal. Resolves with the run's final state.
 */
async function followEvents(client: Client, metadata: grpc.Metadata, job: string, runId: string): Promise<string> {
  let lastSeq = 0n;
  let final = "";
  let reconnects = 0;
  const seen = new Set<string>();
  for (;;) {
    const request =
      lastSeq === 0n ? { jobs: [job], from_start: true } : { jobs: [job], after_seq: lastSeq.toString() };
    const outcome = await new Promise<"hung_up" | "terminal">((resolve, reject) => {
      const call = client.WatchEvents(request, metadata);
      let done = false;
      call.on("data", (event: RunEvent) => {
        if (done) return;
        const seq = BigInt(event.seq);
        if (seq <= lastSeq || seen.has(event.seq)) {
          fail(`event seq=${event.seq} received twice or out of order (last ${lastSeq})`);
        }
        seen.add(event.seq);
        lastSeq = seq;
        if (event.run_id !== runId) return;
        console.log(`event seq=${event.seq} run=${event.run_id} state=${event.state} attempt=${event.attempt}`);
        if (TERMINAL.has(event.state)) {
          final = event.state;
          done = true;
          call.cancel();
          resolve("terminal");
        } else if (reconnects === 0) {
          done = true;
          call.cancel(); // a lost connection, on purpose
          resolve("hung_up");
        }
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (!done) reject(err);
      });
      call.on("end", () => {
        if (!done) reject(new Error("WatchEvents ended before the run did"));
      });
    });
    if (outcome === "terminal") return final;
    reconnects += 1;
    console.log(`reconnecting after seq=${lastSeq}`);
  }
}

/** Prints the run's output as it arrives; resolves with the run's end. */
function followOutput(client: Client, metadata: grpc.Metadata, runId: string): Promise<OutputEvent["end"]> {
  return new Promise((resolve, reject) => {
    const call = client.FollowRunOutput({ run_id: runId }, metadata);
    let end: OutputEvent["end"];
    let partial = "";
    call.on("data", (event: OutputEvent) => {
      if (event.chunk) {
        if (event.chunk.skipped !== "0") console.log(`output: [... ${event.chunk.skipped} bytes skipped ...]`);
        partial += event.chunk.data.toString("utf8");
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) console.log(`output: ${line}`);
      } else if (event.end) {
        end = event.end;
      }
    });
    call.on("error", reject);
    call.on("end", () => {
      if (partial) console.log(`output: ${partial}`);
      resolve(end);
    });
  });
}

function fail(message: string): never {
  console.error(`error: ${message}`);
  process.exit(2);
}

async function main(): Promise<void> {
  const [job, payload = ""] = process.argv.slice(2);
  if (!job) fail("usage: follow.js JOB [PAYLOAD_JSON]");
  const { client, metadata } = connect();
  const runId = await enqueue(client, metadata, job, payload);
  console.log(`enqueued run=${runId}`);
  const [state, end] = await Promise.all([
    followEvents(client, metadata, job, runId),
    followOutput(client, metadata, runId),
  ]);
  if (!end || end.state !== state) fail(`events say ${state}, the output stream says ${end?.state}`);
  console.log(`result: ${state}${end.exit_code !== undefined ? ` exit=${end.exit_code}` : ""}`);
  client.close();
  process.exit(state === "succeeded" ? 0 : 1);
}

main().catch((err: Error) => {
  console.error(`error: ${err.message}`);
  process.exit(err instanceof Error && "code" in err ? 4 : 1);
});
