#!/usr/bin/python3
"""The reference for bench_transport: torch's DataLoader transport, a
torch.multiprocessing queue whose tensors travel in shared memory (the storage is moved
to a shared-memory segment and its handle pickled). A producer process writes one u8
tensor of S bytes per message (copy from a prepared tensor), the consumer copies each out.

  /usr/bin/python3 bench/bench_transport_torch.py SECONDS SIZE [SIZE...]
prints one line per size: SIZE MSGS_PER_S"""
import sys, time
import torch
import torch.multiprocessing as mp


def producer(q, done, size, seconds):
    torch.set_num_threads(1)
    src = torch.arange(size, dtype=torch.int64).to(torch.uint8)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = torch.empty(size, dtype=torch.uint8)
        x.copy_(src)
        q.put(x)
    q.put(None)
    done.wait()   # the consumer takes the storages' handles from this process (as a worker)


def main():
    torch.set_num_threads(1)
    seconds = float(sys.argv[1])
    for size in (int(s) for s in sys.argv[2:]):
        q = mp.Queue(maxsize=16)
        done = mp.Event()
        p = mp.Process(target=producer, args=(q, done, size, seconds))
        p.start()
        dst = torch.empty(size, dtype=torch.uint8)
        n, t0, t1 = 0, None, None
        while True:
            x = q.get()
            if x is None:
                break
            dst.copy_(x)
            del x
            t1 = time.perf_counter()
            if t0 is None:
                t0 = t1
            n += 1
        done.set()
        p.join()
        print(size, (n - 1) / (t1 - t0) if n > 1 else 0.0, flush=True)


if __name__ == "__main__":
    main()
