/* fork + exec of /bin/true: the process lifecycle path, three events each. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000;

	for (long i = 0; i < n; i++) {
		pid_t p = fork();

		if (p == 0) {
			execl("/bin/true", "true", (char *)0);
			_exit(127);
		}
		waitpid(p, NULL, 0);
	}
	return 0;
}
