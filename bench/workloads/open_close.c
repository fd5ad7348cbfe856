/* open+close read-only: a watched syscall whose events are filtered out in
 * the kernel (not a watched path, not a write). */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;

	for (long i = 0; i < n; i++)
		close(open("/etc/hostname", O_RDONLY));
	return 0;
}
