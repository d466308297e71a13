#!/usr/bin/env python3
"""Count the primes in [start, start + size): an existing program that processes a range."""

import sys

start, size = int(sys.argv[1]), int(sys.argv[2])


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


count = sum(1 for n in range(start, start + size) if is_prime(n))
with open(f"primes-{start}.txt", "w") as out:
    out.write(f"{count}\n")
print(f"{count} primes in [{start}, {start + size})")
