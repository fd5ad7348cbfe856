/* Event storm at a fixed rate, for capacity: prctl(PR_SET_NAME) is one
 * cheap syscall and one `prctl` event in the default profile, so the
 * generator itself stays far below the rates it is asked for.
 *
 *   storm RATE SECONDS    prints "<events> <seconds>" when done
 *
 * Pacing is per 1 ms slice: each slice issues its share, then sleeps to the
 * slice's end, so the rate holds without a busy wait. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double rate = argc > 1 ? atof(argv[1]) : 100000, secs = argc > 2 ? atof(argv[2]) : 2;
	double start = now(), slice = 0.001, due = 0;
	long sent = 0;
	struct timespec ts;

	while (now() - start < secs) {
		due += rate * slice;
		while (sent < (long)due) {
			prctl(PR_SET_NAME, "ktrail-storm", 0, 0, 0);
			sent++;
		}
		double until = start + (due / rate);
		double wait = until - now();
		if (wait > 0) {
			ts.tv_sec = (time_t)wait;
			ts.tv_nsec = (long)((wait - ts.tv_sec) * 1e9);
			nanosleep(&ts, NULL);
		}
	}
	printf("%ld %.6f\n", sent, now() - start);
	return 0;
}
