/* O_CREAT flood: every iteration creates a new file, so every iteration is
 * one `create` event (the unlink that makes room for the next one is not in
 * the default profile). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100000;
	const char *dir = argc > 2 ? argv[2] : "/tmp";
	char path[4096];

	snprintf(path, sizeof(path), "%s/ktrail-bench-creat.%d", dir, (int)getpid());
	for (long i = 0; i < n; i++) {
		int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);

		if (fd < 0) {
			perror(path);
			return 1;
		}
		close(fd);
		unlink(path);
	}
	return 0;
}
