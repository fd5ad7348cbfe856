/* TCP connect on loopback: a child accepts and closes, the parent connects
 * and closes, n times (connect and accept events, one each). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
	pid_t child;

	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 4096) ||
	    getsockname(ls, (struct sockaddr *)&a, &len)) {
		perror("listen");
		return 1;
	}
	child = fork();
	if (child == 0) {
		for (long i = 0; i < n; i++)
			close(accept(ls, NULL, NULL));
		_exit(0);
	}
	close(ls);
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		/* Close with RST: n connections in TIME_WAIT would exhaust
		 * loopback's ephemeral ports. */
		struct linger l = { .l_onoff = 1, .l_linger = 0 };

		if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		close(s);
	}
	waitpid(child, NULL, 0);
	return 0;
}
