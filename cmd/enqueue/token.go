package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/versori/import-worker/internal/apitoken"
)

// tokenResult is the --json output of token.
type tokenResult struct {
	Token string `json:"token"`
	Role  string `json:"role"`
	Name  string `json:"name,omitempty"`
	// Line is the line to add to the API's API_TOKENS_FILE.
	Line string `json:"line"`
}

func newTokenCmd(a *app) *cobra.Command {
	var role, name string
	cmd := &cobra.Command{
		Use:   "token --role operator|reader [--name NAME]",
		Short: "Make a new token for the HTTP API and print its API_TOKENS_FILE line",
		Long: `token prints a new random bearer token for the HTTP API (cmd/api) on the
first line and, on the second, the line to add to the API's API_TOKENS_FILE:
the role, the token's SHA-256 and its name. The file never holds the token
itself, so keep the token now: it is not shown again. A reader may read
rollouts and reports; an operator may also create, retry, cancel and delete
them and pause or resume the queue. It needs no Redis.`,
		Example: "  enqueue token --role operator --name ci-pipeline\n  enqueue token --role reader --json",
		Args:    cobra.NoArgs,
	}
	cmd.Flags().StringVar(&role, "role", "", "operator or reader")
	cmd.Flags().StringVar(&name, "name", "", "a name for the token, shown in the API's logs")
	cmd.RunE = runE(func(*cobra.Command, []string) error {
		r := apitoken.Role(role)
		if !r.Valid() {
			return usageError("--role %q: want operator or reader", role)
		}
		if name != "" {
			if err := apitoken.ValidateName(name); err != nil {
				return usageError("--name: %v", err)
			}
		}
		tok, err := apitoken.Generate()
		if err != nil {
			return fmt.Errorf("generate token: %w", err)
		}
		res := tokenResult{Token: tok, Role: role, Name: name, Line: apitoken.Line(r, tok, name)}
		if a.jsonOut {
			return a.printJSON(res)
		}
		fmt.Fprintln(a.stdout, res.Token)
		fmt.Fprintln(a.stdout, res.Line)
		fmt.Fprintln(a.stderr, "add the second line to the API's API_TOKENS_FILE; the first is the token, shown only now")
		return nil
	})
	return cmd
}
