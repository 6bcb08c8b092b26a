/* ns per getppid(2) call, the best of REPS rounds of N calls: what every system call that is not a
 * socket call pays for the tracing hooks attached (bench/bench_syscall_hooks.py).
 * Usage: getppid_loop [N] [REPS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;
	int reps = argc > 2 ? atoi(argv[2]) : 5;
	double best = 1e9;
	for (int r = 0; r < reps; r++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		clock_gettime(CLOCK_MONOTONIC, &b);
		double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
		if (ns < best)
			best = ns;
	}
	printf("%.1f\n", best);
	return 0;
}
