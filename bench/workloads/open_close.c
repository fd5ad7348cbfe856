/* open+close read-only: a watched syscall whose events are filtered out in
 * the kernel (not a watched path, not a write). */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	/* The bench passes a file on /tmp: under qemu, / is a 9p share and
	 * every open there is a round trip to the host. */
	const char *path = argc > 2 ? argv[2] : "/etc/hostname";

	for (long i = 0; i < n; i++)
		close(open(path, O_RDONLY));
	return 0;
}
