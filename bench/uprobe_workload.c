/* Lock- and malloc-heavy workload for bench_uprobe_overhead.py: after a line on
 * stdin, THREADS threads each run N iterations of malloc, mutex lock/unlock and
 * free (plus a little work in the critical section), then it prints the elapsed
 * nanoseconds and exits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long N = 100000;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static volatile long shared;

static void *worker(void *arg)
{
	for (long i = 0; i < N; i++) {
		char *p = malloc(32 + (i & 127));
		p[0] = (char)i;
		pthread_mutex_lock(&mu);
		shared += p[0];
		pthread_mutex_unlock(&mu);
		free(p);
	}
	return arg;
}

int main(int argc, char **argv)
{
	int threads = argc > 2 ? atoi(argv[2]) : 2;
	char line[16];
	struct timespec a, b;
	pthread_t t[16];
	if (argc > 1)
		N = atol(argv[1]);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < threads && i < 16; i++)
		pthread_create(&t[i], NULL, worker, NULL);
	for (int i = 0; i < threads && i < 16; i++)
		pthread_join(t[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
	return 0;
}
