package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/spf13/cobra"
)

// tokenCommand makes tokens and their hashes for the server's tokens
// file. It never touches the network.
func (a *app) tokenCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Make bearer tokens and their hashes for the tokens file",
		Long: `The server's tokens file stores the SHA-256 of each token, never the token.
"token new" prints a new random token and the line to put in the file;
"token hash" reads a token on standard input and prints its hash.`,
	}
	c.AddCommand(&cobra.Command{
		Use:   "new",
		Short: "Print a new random token and its token_sha256 line",
		Args:  args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			tok := auth.NewToken()
			if a.json() {
				return a.printValue(map[string]string{"token": tok, "tokenSha256": auth.HashToken(tok)})
			}
			fmt.Fprintf(a.stdout, "token: %s\ntoken_sha256: %s\n", tok, auth.HashToken(tok))
			return nil
		}),
	})
	c.AddCommand(&cobra.Command{
		Use:   "hash",
		Short: "Read a token on standard input and print its SHA-256",
		Args:  args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			line, err := bufio.NewReader(a.stdin).ReadString('\n')
			tok := strings.TrimSpace(line)
			if tok == "" {
				return errors.Join(errors.New("no token on standard input"), err)
			}
			if a.json() {
				return a.printValue(map[string]string{"tokenSha256": auth.HashToken(tok)})
			}
			fmt.Fprintln(a.stdout, auth.HashToken(tok))
			return nil
		}),
	})
	return c
}
