"""A Python worker of the muster library with a no-op handler, for
bench/clients.sh: capacity from MUSTER_CAPACITY, id and addresses from
MUSTER_WORKER_ID and MUSTER_ADDRS."""
import muster

worker = muster.Worker()


@worker.task("noop")
def noop(task):
    return None


worker.run()
