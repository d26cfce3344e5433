// A Node worker of the muster library with a no-op handler, for
// bench/clients.sh: capacity, id and addresses from MUSTER_* variables.
import { Worker } from "../../clients/node/index.js";

const worker = new Worker();
worker.task("noop", async () => null);
await worker.run();
