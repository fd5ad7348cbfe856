/* A syscall nobody watches: the cost of having the sensor loaded at all. */
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 5000000;

	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	return 0;
}
